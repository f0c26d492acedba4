#include "agent/spool.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/config.h"
#include "common/clock.h"

namespace fleetwes::agent {
namespace {

namespace fs = std::filesystem;

constexpr char kNode[] = "node-a";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "spool_test.XXXXXX").string();
    char* dir = mkdtemp(tmpl.data());
    EXPECT_NE(dir, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

v1::Frame MakeFrame(const std::string& boot, uint64_t seq, size_t padding = 0,
                    const std::string& node = kNode) {
  v1::Frame f;
  f.set_node_id(node);
  f.set_boot_id(boot);
  f.set_seq(seq);
  f.set_interval_s(2.0);
  f.set_pue(1.0 + static_cast<double>(seq) / 1000.0);
  if (padding > 0) (*f.add_devices()->mutable_name()) = std::string(padding, 'x');
  return f;
}

std::vector<uint64_t> Seqs(const std::vector<v1::Frame>& frames) {
  std::vector<uint64_t> out;
  for (const v1::Frame& f : frames) out.push_back(f.seq());
  return out;
}

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (uint64_t s = first; s <= last; ++s) out.push_back(s);
  return out;
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

std::vector<fs::path> FilesEndingWith(const std::string& dir, const std::string& suffix) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      out.push_back(e.path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

class SpoolTest : public ::testing::Test {
 protected:
  std::unique_ptr<Spool> Open(const std::string& boot, uint64_t max_bytes = 1 << 20,
                              uint64_t segment_bytes = 0, const std::string& node = kNode) {
    SpoolOptions o;
    o.dir = (fs::path(dir_.path()) / "spool").string();
    o.node_id = node;
    o.boot_id = boot;
    o.max_bytes = max_bytes;
    o.segment_bytes = segment_bytes;
    auto spool = Spool::Open(o, &clock_);
    EXPECT_TRUE(spool.ok()) << spool.status();
    return spool.ok() ? *std::move(spool) : nullptr;
  }
  std::string spool_dir() const { return (fs::path(dir_.path()) / "spool").string(); }
  std::vector<fs::path> Segments() const { return FilesEndingWith(spool_dir(), ".log"); }

  TempDir dir_;
  FakeClock clock_;
};

TEST_F(SpoolTest, AppendAfterAndAckTrim) {
  auto spool = Open("b1");
  for (uint64_t s = 1; s <= 5; ++s) spool->Push(MakeFrame("b1", s));
  EXPECT_EQ(spool->size(), 5u);
  EXPECT_EQ(Seqs(spool->After(0, 100)), Range(1, 5));
  EXPECT_EQ(Seqs(spool->After(2, 2)), (std::vector<uint64_t>{3, 4}));
  const v1::Frame back = spool->After(3, 1).at(0);
  EXPECT_EQ(back.node_id(), kNode);
  EXPECT_EQ(back.boot_id(), "b1");
  EXPECT_DOUBLE_EQ(back.pue(), 1.004);

  spool->AckUpTo(3);
  EXPECT_EQ(spool->size(), 2u);
  EXPECT_EQ(Seqs(spool->After(0, 100)), (std::vector<uint64_t>{4, 5}));
  spool->AckUpTo(5);
  EXPECT_EQ(spool->size(), 0u);
  EXPECT_TRUE(spool->After(0, 100).empty());
  EXPECT_EQ(spool->stats().appended, 5u);
  EXPECT_EQ(spool->evicted(), 0u);
}

TEST_F(SpoolTest, FullyAckedSegmentsAreDeletedOthersKept) {
  // ~300 byte frames, 1 KiB segments: a few frames per segment.
  auto spool = Open("b1", 1 << 20, 1024);
  for (uint64_t s = 1; s <= 20; ++s) spool->Push(MakeFrame("b1", s, 250));
  const size_t before = Segments().size();
  ASSERT_GE(before, 5u);
  spool->AckUpTo(1);  // the first segment still holds unacknowledged frames
  EXPECT_EQ(Segments().size(), before);
  spool->AckUpTo(10);
  const size_t mid = Segments().size();
  EXPECT_LT(mid, before);
  EXPECT_GT(mid, 1u);
  EXPECT_EQ(Seqs(spool->After(0, 100)), Range(11, 20));
  spool->AckUpTo(20);
  EXPECT_EQ(Segments().size(), 1u);  // only the active one
}

TEST_F(SpoolTest, RestartReplaysExactlyTheUnackedFramesInOrder) {
  {
    auto spool = Open("boot-1", 1 << 20, 1024);
    for (uint64_t s = 1; s <= 12; ++s) spool->Push(MakeFrame("boot-1", s, 200));
    spool->AckUpTo(7);
  }  // destructor flushes (segments and ack position)
  auto spool = Open("boot-2", 1 << 20, 1024);
  EXPECT_EQ(spool->stats().replayed, 5u);
  EXPECT_EQ(spool->PendingBoots(), (std::vector<std::string>{"boot-1"}));
  EXPECT_TRUE(spool->After(0, 100).empty());  // nothing of the new boot yet
  std::vector<v1::Frame> old = spool->AfterInBoot("boot-1", 0, 100);
  EXPECT_EQ(Seqs(old), Range(8, 12));
  for (const v1::Frame& f : old) EXPECT_EQ(f.boot_id(), "boot-1");

  // New frames of this boot are spooled alongside; the old boot is acked through its view.
  spool->Push(MakeFrame("boot-2", 1));
  SpoolBootView view(spool.get(), "boot-1");
  EXPECT_EQ(view.size(), 5u);
  EXPECT_EQ(Seqs(view.After(9, 2)), (std::vector<uint64_t>{10, 11}));
  view.AckUpTo(12);
  EXPECT_TRUE(spool->PendingBoots().empty());
  EXPECT_EQ(Seqs(spool->After(0, 10)), (std::vector<uint64_t>{1}));
}

TEST_F(SpoolTest, AckPositionSurvivesSeveralRestarts) {
  {
    auto spool = Open("b1");
    for (uint64_t s = 1; s <= 4; ++s) spool->Push(MakeFrame("b1", s));
    spool->AckUpTo(2);
  }
  {
    auto spool = Open("b2");
    spool->AckInBoot("b1", 3);
    spool->Push(MakeFrame("b2", 1));
    spool->Push(MakeFrame("b2", 2));
  }
  auto spool = Open("b3");
  EXPECT_EQ(spool->PendingBoots(), (std::vector<std::string>{"b1", "b2"}));
  EXPECT_EQ(Seqs(spool->AfterInBoot("b1", 0, 10)), (std::vector<uint64_t>{4}));
  EXPECT_EQ(Seqs(spool->AfterInBoot("b2", 0, 10)), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(spool->stats().replayed, 3u);
}

// Polls `done` for up to 10 s of real time (the spool's thread runs on its own).
template <typename F>
bool Eventually(F done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

TEST_F(SpoolTest, GroupFsyncRunsOnTheInjectedClockOnlyWhileFramesAreUnsynced) {
  auto spool = Open("b1");
  const uint64_t syncs = spool->stats().syncs;
  spool->Push(MakeFrame("b1", 1));
  spool->Push(MakeFrame("b1", 2));
  EXPECT_EQ(spool->stats().unsynced, 2u);
  // The fsync is due fsync_interval (200 ms) after the first unsynced append.
  ASSERT_TRUE(Eventually([&] { return clock_.waiters() > 0; }));
  clock_.Advance(absl::Milliseconds(100));  // not yet due
  EXPECT_EQ(spool->stats().unsynced, 2u);
  clock_.Advance(absl::Milliseconds(100));
  ASSERT_TRUE(Eventually([&] { return spool->stats().unsynced == 0; }));
  EXPECT_GT(spool->stats().syncs, syncs);
  // Nothing left to sync: the thread stops waiting on the clock (no periodic timer when idle).
  EXPECT_TRUE(Eventually([&] { return clock_.waiters() == 0; }));
}

TEST_F(SpoolTest, FsyncIntervalIsClampedTo500ms) {
  SpoolOptions o;
  o.dir = spool_dir();
  o.node_id = kNode;
  o.boot_id = "b1";
  o.fsync_interval = absl::Seconds(30);
  auto spool = Spool::Open(o, &clock_);
  ASSERT_TRUE(spool.ok());
  (*spool)->Push(MakeFrame("b1", 1));
  clock_.Advance(absl::Milliseconds(500));
  EXPECT_TRUE(Eventually([&] { return (*spool)->stats().unsynced == 0; }));
}

// The ack position is written lazily: the first ack after open at the next group fsync, later
// ones no more often than ack_interval (a stale position only causes resends), and at once by
// Flush().
TEST_F(SpoolTest, AckFileIsWrittenLazily) {
  const fs::path acks = fs::path(spool_dir()) / "acks";
  auto spool = Open("b1");
  spool->Push(MakeFrame("b1", 1));
  spool->Push(MakeFrame("b1", 2));
  spool->AckUpTo(1);
  clock_.Advance(absl::Milliseconds(200));
  ASSERT_TRUE(Eventually([&] { return spool->stats().ack_writes == 1; }));
  EXPECT_NE(ReadFile(acks).find("ack b1 1\n"), std::string::npos) << ReadFile(acks);

  spool->AckUpTo(2);
  spool->Push(MakeFrame("b1", 3));
  clock_.Advance(absl::Milliseconds(200));
  ASSERT_TRUE(Eventually([&] { return spool->stats().unsynced == 0; }));
  EXPECT_EQ(spool->stats().ack_writes, 1u);  // within ack_interval: the file stays behind
  EXPECT_NE(ReadFile(acks).find("ack b1 1\n"), std::string::npos) << ReadFile(acks);

  clock_.Advance(absl::Seconds(30));
  spool->Push(MakeFrame("b1", 4));
  clock_.Advance(absl::Milliseconds(200));
  ASSERT_TRUE(Eventually([&] { return spool->stats().ack_writes == 2; }));
  EXPECT_NE(ReadFile(acks).find("ack b1 2\n"), std::string::npos) << ReadFile(acks);

  spool->AckUpTo(3);
  spool->Flush();
  EXPECT_EQ(spool->stats().ack_writes, 3u);
  EXPECT_NE(ReadFile(acks).find("ack b1 3\n"), std::string::npos) << ReadFile(acks);
}

TEST_F(SpoolTest, EvictsOldestSegmentsWhenOverTheBoundAndPersistsTheCount) {
  const uint64_t max_bytes = 8 * 1024;
  {
    auto spool = Open("b1", max_bytes, 2048);
    for (uint64_t s = 1; s <= 100; ++s) spool->Push(MakeFrame("b1", s, 300));
    const SpoolStats st = spool->stats();
    EXPECT_LE(st.bytes, max_bytes);
    EXPECT_GT(st.evicted, 0u);
    EXPECT_EQ(st.evicted + st.pending, 100u);  // every frame is either kept or counted
    std::vector<uint64_t> kept = Seqs(spool->After(0, 1000));
    ASSERT_FALSE(kept.empty());
    EXPECT_EQ(kept, Range(kept.front(), 100));  // the newest survive, oldest went first
    EXPECT_EQ(kept.front(), st.evicted + 1);
    EXPECT_EQ(spool->evicted(), st.evicted);
  }
  auto spool = Open("b2", max_bytes, 2048);
  EXPECT_GT(spool->evicted(), 0u);  // "ever": reported again in the next Hello
}

TEST_F(SpoolTest, AckedFramesAreNotCountedAsEvicted) {
  auto spool = Open("b1", 8 * 1024, 2048);
  for (uint64_t s = 1; s <= 100; ++s) {
    spool->Push(MakeFrame("b1", s, 300));
    spool->AckUpTo(s);
  }
  EXPECT_EQ(spool->evicted(), 0u);
  EXPECT_LE(spool->stats().bytes, 8u * 1024);
}

TEST_F(SpoolTest, TornTailRecordIsSkippedAndCounted) {
  {
    auto spool = Open("b1");
    for (uint64_t s = 1; s <= 5; ++s) spool->Push(MakeFrame("b1", s, 50));
  }
  const fs::path seg = Segments().back();
  const std::string data = ReadFile(seg);
  WriteFile(seg, data.substr(0, data.size() - 10));  // the last record is cut short
  auto spool = Open("b2");
  EXPECT_EQ(spool->stats().torn_tails, 1u);
  EXPECT_EQ(spool->stats().quarantined, 0u);
  EXPECT_EQ(Seqs(spool->AfterInBoot("b1", 0, 10)), Range(1, 4));
  EXPECT_TRUE(FilesEndingWith(spool_dir(), ".corrupt").empty());
}

TEST_F(SpoolTest, TornRecordHeaderAtTheTail) {
  {
    auto spool = Open("b1");
    for (uint64_t s = 1; s <= 3; ++s) spool->Push(MakeFrame("b1", s));
  }
  const fs::path seg = Segments().back();
  WriteFile(seg, ReadFile(seg) + std::string("\x05\x00\x00", 3));
  auto spool = Open("b2");
  EXPECT_EQ(spool->stats().torn_tails, 1u);
  EXPECT_EQ(Seqs(spool->AfterInBoot("b1", 0, 10)), Range(1, 3));
}

TEST_F(SpoolTest, FlippedByteMidFileQuarantinesAndKeepsRecordsBeforeIt) {
  {
    auto spool = Open("b1");
    for (uint64_t s = 1; s <= 10; ++s) spool->Push(MakeFrame("b1", s, 100));
  }
  const fs::path seg = Segments().back();
  std::string data = ReadFile(seg);
  // Frames are the same size: flip a byte inside the payload of the 6th record.
  const size_t header = 8 + 4 + 4 + std::string(kNode).size() + 4;
  const size_t record = (data.size() - header) / 10;
  ASSERT_EQ(header + 10 * record, data.size());
  const size_t pos = header + 5 * record + 8 + record / 2;
  data[pos] = static_cast<char>(data[pos] ^ 0x5a);
  WriteFile(seg, data);

  auto spool = Open("b2");
  const SpoolStats st = spool->stats();
  EXPECT_EQ(st.quarantined, 1u);
  ASSERT_EQ(FilesEndingWith(spool_dir(), ".corrupt").size(), 1u);
  std::vector<uint64_t> kept = Seqs(spool->AfterInBoot("b1", 0, 100));
  ASSERT_FALSE(kept.empty());
  EXPECT_EQ(kept, Range(1, 5));

  // Newer frames keep flowing and the salvaged copy reopens cleanly.
  spool->Push(MakeFrame("b2", 1));
  EXPECT_EQ(Seqs(spool->After(0, 10)), (std::vector<uint64_t>{1}));
  spool.reset();
  auto again = Open("b3");
  EXPECT_EQ(again->stats().quarantined, 0u);
  EXPECT_EQ(Seqs(again->AfterInBoot("b1", 0, 100)), kept);
  EXPECT_EQ(Seqs(again->AfterInBoot("b2", 0, 100)), (std::vector<uint64_t>{1}));
}

TEST_F(SpoolTest, CorruptLengthMidFileIsQuarantined) {
  {
    auto spool = Open("b1");
    for (uint64_t s = 1; s <= 6; ++s) spool->Push(MakeFrame("b1", s, 100));
  }
  const fs::path seg = Segments().back();
  std::string data = ReadFile(seg);
  // The first record starts right after the header: 8 magic + 4 + 4 + node + 4 crc.
  const size_t first = 8 + 4 + 4 + std::string(kNode).size() + 4;
  data[first + 3] = '\x7f';  // absurd length
  WriteFile(seg, data);
  auto spool = Open("b2");
  EXPECT_EQ(spool->stats().quarantined, 1u);
  EXPECT_TRUE(spool->PendingBoots().empty());
  EXPECT_EQ(FilesEndingWith(spool_dir(), ".corrupt").size(), 1u);
}

TEST_F(SpoolTest, TruncatedSegmentKeepsWholeRecords) {
  {
    auto spool = Open("b1");
    for (uint64_t s = 1; s <= 8; ++s) spool->Push(MakeFrame("b1", s, 100));
  }
  const fs::path seg = Segments().back();
  const std::string data = ReadFile(seg);
  WriteFile(seg, data.substr(0, data.size() / 2));
  auto spool = Open("b2");
  std::vector<uint64_t> kept = Seqs(spool->AfterInBoot("b1", 0, 100));
  ASSERT_FALSE(kept.empty());
  EXPECT_EQ(kept, Range(1, kept.size()));
  EXPECT_LT(kept.size(), 8u);
  EXPECT_EQ(spool->stats().torn_tails, 1u);

  // A segment cut inside its header is quarantined.
  spool.reset();
  WriteFile(Segments().front(), data.substr(0, 10));
  auto again = Open("b3");
  EXPECT_EQ(again->stats().quarantined, 1u);
  EXPECT_TRUE(again->AfterInBoot("b1", 0, 100).empty());
}

TEST_F(SpoolTest, SegmentFromAnotherNodeIsQuarantined) {
  {
    auto other = Open("x1", 1 << 20, 0, "node-b");
    other->Push(MakeFrame("x1", 1, 0, "node-b"));
  }
  auto spool = Open("b1");
  EXPECT_EQ(spool->stats().quarantined, 1u);
  EXPECT_TRUE(spool->PendingBoots().empty());
  EXPECT_EQ(FilesEndingWith(spool_dir(), ".corrupt").size(), 1u);
  spool->Push(MakeFrame("b1", 1));
  EXPECT_EQ(spool->size(), 1u);
}

TEST_F(SpoolTest, GarbageFilesNeverCrashOrBlock) {
  fs::create_directories(spool_dir());
  WriteFile(fs::path(spool_dir()) / "notes.txt", "hello");
  std::string noise(5000, '\0');
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<char>(i * 131 + 7);
  WriteFile(fs::path(spool_dir()) / absl::StrFormat("seg-%020d.log", 3), noise);
  WriteFile(fs::path(spool_dir()) / absl::StrFormat("seg-%020d.log", 4), "");
  WriteFile(fs::path(spool_dir()) / "acks", std::string("\xff\xfe garbage\n", 11));
  fs::create_directories(fs::path(spool_dir()) / "subdir");

  auto spool = Open("b1");
  const SpoolStats st = spool->stats();
  EXPECT_EQ(st.quarantined, 1u);  // the noise; the empty file is simply removed
  EXPECT_FALSE(fs::exists(fs::path(spool_dir()) / absl::StrFormat("seg-%020d.log", 4)));
  EXPECT_EQ(st.ignored_files, 2u);  // notes.txt, subdir
  EXPECT_TRUE(fs::exists(fs::path(spool_dir()) / "notes.txt"));
  spool->Push(MakeFrame("b1", 1));
  spool->Push(MakeFrame("b1", 2));
  spool->AckUpTo(1);
  EXPECT_EQ(Seqs(spool->After(0, 10)), (std::vector<uint64_t>{2}));
  // New segments are numbered after the damaged ones.
  EXPECT_GT(Segments().back().filename().string(), absl::StrFormat("seg-%020d.log", 4));
}

TEST_F(SpoolTest, UnknownDuplicatedAndOutOfOrderAcks) {
  auto spool = Open("b1");
  for (uint64_t s = 1; s <= 5; ++s) spool->Push(MakeFrame("b1", s));
  spool->AckUpTo(3);
  spool->AckUpTo(3);  // duplicate
  spool->AckUpTo(2);  // out of order
  EXPECT_EQ(spool->stats().ignored_acks, 2u);
  EXPECT_EQ(Seqs(spool->After(0, 10)), (std::vector<uint64_t>{4, 5}));

  spool->AckInBoot("no-such-boot", 10);
  EXPECT_EQ(spool->stats().ignored_acks, 3u);

  // Beyond anything spooled: clamped, so later frames are not silently acknowledged.
  spool->AckUpTo(1000);
  EXPECT_EQ(spool->stats().clamped_acks, 1u);
  EXPECT_EQ(spool->size(), 0u);
  spool->Push(MakeFrame("b1", 6));
  EXPECT_EQ(Seqs(spool->After(0, 10)), (std::vector<uint64_t>{6}));
}

TEST_F(SpoolTest, RefusesForeignAndNonIncreasingFrames) {
  auto spool = Open("b1");
  spool->Push(MakeFrame("b1", 2));
  spool->Push(MakeFrame("b1", 2));               // duplicate seq
  spool->Push(MakeFrame("b1", 1));               // going back
  spool->Push(MakeFrame("other", 3));            // another boot
  spool->Push(MakeFrame("b1", 3, 0, "node-z"));  // another node
  SpoolBootView(spool.get(), "old").Push(MakeFrame("old", 1));
  EXPECT_EQ(spool->stats().rejected_pushes, 5u);
  EXPECT_EQ(Seqs(spool->After(0, 10)), (std::vector<uint64_t>{2}));
}

TEST_F(SpoolTest, OpenFailsCleanlyWhenTheDirectoryCannotBeCreated) {
  const fs::path file = fs::path(dir_.path()) / "plain-file";
  WriteFile(file, "x");
  SpoolOptions o;
  o.dir = (file / "spool").string();
  o.node_id = kNode;
  o.boot_id = "b1";
  EXPECT_FALSE(Spool::Open(o, &clock_).ok());
}

TEST(SpoolConfigTest, OnByDefaultWithDefaults) {
  auto none = ParseConfig("node_id: n1\n");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->spool.enabled);

  auto defaults = ParseConfig("node_id: n1\nspool: {}\n");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_TRUE(defaults->spool.enabled);
  EXPECT_EQ(defaults->spool.dir, "/var/lib/fleetwes/spool");
  EXPECT_EQ(defaults->spool.max_bytes, int64_t{256} << 20);
  EXPECT_EQ(defaults->spool.fsync_interval, absl::Milliseconds(200));

  auto set =
      ParseConfig("node_id: n1\nspool: {dir: /tmp/s, max_bytes: 2097152, fsync_interval: 50ms}\n");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->spool.dir, "/tmp/s");
  EXPECT_EQ(set->spool.max_bytes, 2097152);
  EXPECT_EQ(set->spool.fsync_interval, absl::Milliseconds(50));

  EXPECT_FALSE(ParseConfig("node_id: n1\nspool: {fsync_interval: 2s}\n").ok());
  EXPECT_FALSE(ParseConfig("node_id: n1\nspool: {dir: relative}\n").ok());
  EXPECT_FALSE(ParseConfig("node_id: n1\nspool: {max_bytes: 10}\n").ok());
  EXPECT_FALSE(ParseConfig("node_id: n1\nspool: {bogus: 1}\n").ok());
  EXPECT_FALSE(ParseConfig("node_id: n1\nspool: {dir: \"\"}\n").ok());
  auto off = ParseConfig("node_id: n1\nspool: {enabled: false}\n");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->spool.enabled);
}

}  // namespace
}  // namespace fleetwes::agent

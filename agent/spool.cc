#include "agent/spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"

namespace fleetwes::agent {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'F', 'W', 'S', 'P', 'O', 'O', 'L', '\n'};
constexpr size_t kMaxNodeIdBytes = 128;
constexpr size_t kRecordHeaderBytes = 8;
constexpr char kAckFile[] = "acks";
constexpr char kAckMagic[] = "fleetwes-spool-acks 1";
constexpr uint64_t kMinSegmentBytes = 64 << 10;

uint32_t Crc(const char* data, size_t n) {
  return static_cast<uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data), static_cast<uInt>(n)));
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string SegmentHeader(const std::string& node_id) {
  std::string h(kMagic, sizeof(kMagic));
  PutU32(&h, Spool::kFormatVersion);
  PutU32(&h, static_cast<uint32_t>(node_id.size()));
  h += node_id;
  PutU32(&h, Crc(h.data(), h.size()));
  return h;
}

std::string SegmentName(uint64_t number) { return absl::StrFormat("seg-%020d.log", number); }

// "seg-<20 digits>.log" -> number.
bool ParseSegmentName(const std::string& name, uint64_t* number) {
  if (name.size() != 4 + 20 + 4 || !absl::StartsWith(name, "seg-") ||
      !absl::EndsWith(name, ".log")) {
    return false;
  }
  const std::string digits = name.substr(4, 20);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  return absl::SimpleAtoi(digits, number) && *number > 0;
}

bool PreadAll(int fd, char* buf, size_t n, uint64_t offset) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, buf, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    buf += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return true;
}

bool PwriteAll(int fd, const char* buf, size_t n, uint64_t offset) {
  while (n > 0) {
    const ssize_t r = ::pwrite(fd, buf, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    buf += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return true;
}

std::string Errno() { return std::strerror(errno); }

// Writes `text` to `path` atomically: tmp file, fsync, rename.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", tmp, ": ", Errno()));
  const bool ok = PwriteAll(fd, text.data(), text.size(), 0) && ::fdatasync(fd) == 0;
  const std::string error = ok ? "" : Errno();
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = ok ? Errno() : error;
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("write ", path, ": ", why));
  }
  return absl::OkStatus();
}

// Copies the first `n` bytes of `fd` to a new file `path`, fsync'ed. False on any failure.
bool CopyPrefix(int fd, uint64_t n, const std::string& path) {
  const int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (out < 0) return false;
  std::string buf(1 << 16, '\0');
  bool ok = true;
  for (uint64_t off = 0; ok && off < n;) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(buf.size(), n - off));
    ok = PreadAll(fd, buf.data(), chunk, off) && PwriteAll(out, buf.data(), chunk, off);
    off += chunk;
  }
  ok = ok && ::fdatasync(out) == 0;
  ::close(out);
  if (!ok) ::unlink(path.c_str());
  return ok;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Spool>> Spool::Open(SpoolOptions options, Clock* clock) {
  if (options.dir.empty()) return absl::InvalidArgumentError("spool: dir is empty");
  if (options.node_id.empty() || options.node_id.size() > kMaxNodeIdBytes) {
    return absl::InvalidArgumentError("spool: node id must be 1..128 bytes");
  }
  if (options.boot_id.empty()) return absl::InvalidArgumentError("spool: boot id is empty");
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec || !fs::is_directory(options.dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("spool: cannot create directory ", options.dir, ": ", ec.message()));
  }
  options.max_bytes = std::max<uint64_t>(options.max_bytes, 1024);
  if (options.segment_bytes == 0) {
    options.segment_bytes = std::max<uint64_t>(options.max_bytes / 8, kMinSegmentBytes);
  }
  options.segment_bytes =
      std::max<uint64_t>(std::min(options.segment_bytes, options.max_bytes / 2), 1);
  options.fsync_interval =
      std::clamp(options.fsync_interval, absl::Milliseconds(1), kMaxFsyncInterval);

  std::unique_ptr<Spool> spool(new Spool(std::move(options), clock));
  {
    absl::MutexLock lock(&spool->mu_);
    spool->LoadAcks();
    spool->Scan();
    if (absl::Status s = spool->StartSegment(); !s.ok()) return s;
  }
  spool->Flush();  // the new segment, salvaged copies and a pruned ack file are durable
  spool->timer_ = std::thread([s = spool.get()] { s->TimerLoop(); });
  return spool;
}

Spool::Spool(SpoolOptions options, Clock* clock) : options_(std::move(options)), clock_(clock) {}

Spool::~Spool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  stop_.Notify();
  if (timer_.joinable()) timer_.join();
  Flush();
  absl::MutexLock lock(&mu_);
  for (Segment& s : segments_) {
    if (s.fd >= 0) ::close(s.fd);
    s.fd = -1;
  }
}

bool Spool::SyncDue() const { return stats_.unsynced > 0 || !to_sync_.empty() || acks_urgent_; }

void Spool::TimerLoop() {
  while (true) {
    absl::Time due;
    {
      absl::MutexLock lock(&mu_);
      // No timer while there is nothing to sync: the thread sleeps until an append (or a stop).
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || SyncDue(); };
      mu_.Await(absl::Condition(&wake));
      if (stopping_) return;
      due = unsynced_since_.value_or(clock_->Now()) + options_.fsync_interval;
    }
    if (clock_->WaitUntil(due, &stop_)) return;
    Sync(/*all=*/false);
  }
}

void Spool::LoadAcks() {
  const std::string path = (fs::path(options_.dir) / kAckFile).string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    text.append(buf, static_cast<size_t>(r));
    if (text.size() > (4 << 20)) break;  // far beyond any real ack file
  }
  ::close(fd);
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  if (lines.empty() || lines[0] != kAckMagic) {
    Logger("spool")->warn("spool {}: ack file unreadable; unacknowledged frames will be resent",
                          options_.dir);
    return;
  }
  size_t bad = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> f = absl::StrSplit(lines[i], ' ');
    uint64_t v = 0;
    if (f.size() == 2 && f[0] == "evicted" && absl::SimpleAtoi(f[1], &v)) {
      stats_.evicted = v;
    } else if (f.size() == 3 && f[0] == "ack" && !f[1].empty() && absl::SimpleAtoi(f[2], &v)) {
      acked_[f[1]] = std::max(acked_[f[1]], v);
    } else {
      ++bad;
    }
  }
  if (bad > 0) {
    Logger("spool")->warn("spool {}: {} malformed line(s) in the ack file ignored", options_.dir,
                          bad);
  }
}

void Spool::Scan() {
  auto log = Logger("spool");
  std::vector<std::pair<uint64_t, std::string>> found;
  std::error_code ec;
  for (fs::directory_iterator it(options_.dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    uint64_t number = 0;
    if (ParseSegmentName(name, &number)) {
      found.emplace_back(number, it->path().string());
    } else if (name == kAckFile || absl::EndsWith(name, ".corrupt")) {
      // ours: the ack file (already read) and earlier quarantines
    } else if (name == std::string(kAckFile) + ".tmp" ||
               (absl::StartsWith(name, "seg-") && absl::EndsWith(name, ".log.tmp"))) {
      fs::remove(it->path(), ec);  // an interrupted atomic write
      ec.clear();
    } else {
      ++stats_.ignored_files;
      log->warn("spool {}: ignoring unrelated file {}", options_.dir, name);
    }
  }
  if (ec) log->warn("spool {}: listing stopped early: {}", options_.dir, ec.message());
  std::sort(found.begin(), found.end());
  for (const auto& [number, path] : found) {
    next_segment_ = std::max(next_segment_, number + 1);
    ScanSegment(number, path);
  }
  DeleteAckedSegments();
  for (const Segment& s : segments_) stats_.replayed += PendingIn(s);
  if (!segments_.empty()) {
    log->info("spool {}: {} segment(s), {} unacknowledged frame(s) to replay", options_.dir,
              segments_.size(), stats_.replayed);
  }
}

void Spool::ScanSegment(uint64_t number, const std::string& path) {
  auto log = Logger("spool");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    log->warn("spool: cannot open {}: {}; left in place", path, Errno());
    return;
  }
  struct stat st {};
  const uint64_t size = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;

  auto quarantine = [&](const std::string& why, uint64_t good_bytes, size_t good_records) {
    ++stats_.quarantined;
    const std::string corrupt = path + ".corrupt";
    const std::string tmp = path + ".tmp";
    const bool salvage = good_records > 0 && CopyPrefix(fd, good_bytes, tmp);
    ::close(fd);
    if (::rename(path.c_str(), corrupt.c_str()) != 0) {
      log->error("spool: cannot quarantine {}: {}; removing it", path, Errno());
      ::unlink(path.c_str());
    }
    dir_dirty_ = true;
    if (salvage && ::rename(tmp.c_str(), path.c_str()) == 0) {
      log->warn("spool: segment {} damaged ({}); quarantined as {}, kept its first {} frame(s)",
                path, why, corrupt, good_records);
      return true;
    }
    if (salvage) ::unlink(tmp.c_str());
    log->warn("spool: segment {} damaged ({}); quarantined as {}", path, why, corrupt);
    return false;
  };

  if (size == 0) {  // created, then the agent stopped before the header: nothing inside
    ::close(fd);
    ::unlink(path.c_str());
    dir_dirty_ = true;
    return;
  }

  // Header.
  const std::string want = SegmentHeader(options_.node_id);
  std::string head(std::min<uint64_t>(size, 16 + kMaxNodeIdBytes + 4), '\0');
  if (!PreadAll(fd, head.data(), head.size(), 0) || head.size() < 16 ||
      std::memcmp(head.data(), kMagic, sizeof(kMagic)) != 0) {
    quarantine("bad header", 0, 0);
    return;
  }
  const uint32_t version = GetU32(head.data() + 8);
  const uint32_t id_len = GetU32(head.data() + 12);
  if (version != kFormatVersion) {
    quarantine(absl::StrCat("format version ", version), 0, 0);
    return;
  }
  if (id_len > kMaxNodeIdBytes || head.size() < 16 + id_len + 4 ||
      Crc(head.data(), 16 + id_len) != GetU32(head.data() + 16 + id_len)) {
    quarantine("bad header", 0, 0);
    return;
  }
  if (head.compare(0, want.size(), want) != 0) {
    quarantine(absl::StrCat("written by node \"", head.substr(16, id_len), "\""), 0, 0);
    return;
  }

  Segment seg;
  seg.number = number;
  seg.path = path;
  uint64_t offset = want.size();
  std::map<std::string, uint64_t> last_seq;
  std::string payload;
  enum { kClean, kTorn, kDamaged } outcome = kClean;
  std::string why;
  while (offset < size) {
    char rh[kRecordHeaderBytes];
    if (size - offset < kRecordHeaderBytes) {
      outcome = kTorn;
      break;
    }
    if (!PreadAll(fd, rh, sizeof(rh), offset)) {
      outcome = kDamaged;
      why = "read error";
      break;
    }
    const uint32_t length = GetU32(rh);
    const uint32_t crc = GetU32(rh + 4);
    const uint64_t end = offset + kRecordHeaderBytes + length;
    if (length == 0 || length > kMaxRecordBytes) {
      // A record header that cannot be right: damage, unless nothing follows it.
      outcome = offset + kRecordHeaderBytes >= size ? kTorn : kDamaged;
      why = absl::StrCat("record length ", length, " at offset ", offset);
      break;
    }
    if (end > size) {
      outcome = kTorn;
      break;
    }
    payload.resize(length);
    v1::Frame frame;
    bool good = PreadAll(fd, payload.data(), length, offset + kRecordHeaderBytes) &&
                Crc(payload.data(), length) == crc && frame.ParseFromString(payload) &&
                frame.node_id() == options_.node_id && !frame.boot_id().empty() && frame.seq() > 0;
    if (!good) {
      outcome = end == size ? kTorn : kDamaged;
      why = absl::StrCat("bad record at offset ", offset);
      break;
    }
    uint64_t& last = last_seq[frame.boot_id()];
    if (frame.seq() <= last) {
      outcome = end == size ? kTorn : kDamaged;
      why = absl::StrCat("seq ", frame.seq(), " not increasing at offset ", offset);
      break;
    }
    last = frame.seq();
    Append(seg, Record{frame.boot_id(), frame.seq(), offset + kRecordHeaderBytes, length});
    offset = end;
  }

  if (outcome == kDamaged) {
    if (!quarantine(why, offset, seg.records.size())) return;
    seg.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (seg.fd < 0) return;
  } else {
    if (outcome == kTorn) {
      ++stats_.torn_tails;
      log->warn("spool: torn tail record in {} at offset {} skipped ({} frame(s) kept)", path,
                offset, seg.records.size());
      if (::truncate(path.c_str(), static_cast<off_t>(offset)) != 0) {
        log->warn("spool: cannot truncate {}: {}", path, Errno());
      }
    }
    seg.fd = fd;
  }
  seg.bytes = offset;
  for (const Record& r : seg.records) {
    uint64_t& hi = highest_[r.boot_id];
    hi = std::max(hi, r.seq);
  }
  segments_.push_back(std::move(seg));
}

absl::Status Spool::StartSegment() {
  const uint64_t number = next_segment_++;
  const std::string path = (fs::path(options_.dir) / SegmentName(number)).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) return absl::InternalError(absl::StrCat("spool: create ", path, ": ", Errno()));
  const std::string header = SegmentHeader(options_.node_id);
  if (!PwriteAll(fd, header.data(), header.size(), 0)) {
    const std::string why = Errno();
    ::close(fd);
    ::unlink(path.c_str());
    return absl::InternalError(absl::StrCat("spool: write ", path, ": ", why));
  }
  Segment seg;
  seg.number = number;
  seg.path = path;
  seg.fd = fd;
  seg.bytes = header.size();
  segments_.push_back(std::move(seg));
  active_ok_ = true;
  dir_dirty_ = true;
  return absl::OkStatus();
}

void Spool::SealActive() {
  if (!active_ok_ || segments_.empty()) return;
  active_ok_ = false;
  const int dup = ::dup(segments_.back().fd);
  if (dup >= 0) to_sync_.push_back(dup);
}

void Spool::Push(v1::Frame frame) {
  std::string payload;
  const bool ours = frame.node_id() == options_.node_id && frame.boot_id() == options_.boot_id;
  if (ours) frame.SerializeToString(&payload);
  absl::MutexLock lock(&mu_);
  const uint64_t last = highest_.count(options_.boot_id) ? highest_[options_.boot_id] : 0;
  if (!ours || frame.seq() <= last || payload.empty() || payload.size() > kMaxRecordBytes) {
    ++stats_.rejected_pushes;
    Logger("spool")->warn("spool: refused frame {}/{}/{} (expected node {}, boot {}, seq above {})",
                          frame.node_id(), frame.boot_id(), frame.seq(), options_.node_id,
                          options_.boot_id, last);
    return;
  }
  std::string record;
  record.reserve(kRecordHeaderBytes + payload.size());
  PutU32(&record, static_cast<uint32_t>(payload.size()));
  PutU32(&record, Crc(payload.data(), payload.size()));
  record += payload;

  if (active_ok_ && segments_.back().bytes + record.size() > options_.segment_bytes &&
      !segments_.back().records.empty()) {
    SealActive();
  }
  if (!active_ok_) {
    if (absl::Status s = StartSegment(); !s.ok()) {
      ++stats_.write_errors;
      ++stats_.evicted;
      acks_dirty_ = acks_urgent_ = true;
      Logger("spool")->error("node {}: frame seq {} dropped: {}", options_.node_id, frame.seq(),
                             std::string(s.message()));
      return;
    }
  }
  Segment& seg = segments_.back();
  if (!PwriteAll(seg.fd, record.data(), record.size(), seg.bytes)) {
    const std::string why = Errno();
    ++stats_.write_errors;
    ++stats_.evicted;
    acks_dirty_ = acks_urgent_ = true;
    // Cut the partial record so the segment stays well formed; appends move to a new segment.
    if (::ftruncate(seg.fd, static_cast<off_t>(seg.bytes)) != 0) {
      Logger("spool")->warn("spool: cannot truncate {}: {}", seg.path, Errno());
    }
    SealActive();
    Logger("spool")->error("node {}: frame seq {} dropped: write {}: {}", options_.node_id,
                           frame.seq(), seg.path, why);
    return;
  }
  Append(seg, Record{options_.boot_id, frame.seq(), seg.bytes + kRecordHeaderBytes,
                     static_cast<uint32_t>(payload.size())});
  seg.bytes += record.size();
  highest_[options_.boot_id] = frame.seq();
  ++stats_.appended;
  if (stats_.unsynced++ == 0) unsynced_since_ = clock_->Now();
  EvictOverBound();
}

void Spool::EvictOverBound() {
  uint64_t total = 0;
  for (const Segment& s : segments_) total += s.bytes;
  while (total > options_.max_bytes) {
    if (segments_.size() == 1) {
      SealActive();
      if (!StartSegment().ok()) return;
      total += segments_.back().bytes;
    }
    Segment& oldest = segments_.front();
    const uint64_t lost = PendingIn(oldest);
    uint64_t first = 0;
    for (const Record& r : oldest.records) {
      if (!IsAcked(r)) {
        first = r.seq;
        break;
      }
    }
    total -= oldest.bytes;
    if (lost > 0) {
      stats_.evicted += lost;
      acks_dirty_ = acks_urgent_ = true;
      Logger("spool")->warn(
          "node {}: spool over {} bytes: evicted {} unacknowledged frame(s) from seq {} "
          "({} evicted in total)",
          options_.node_id, options_.max_bytes, lost, first, stats_.evicted);
    }
    DropSegment(oldest);
    segments_.pop_front();
  }
}

void Spool::DropSegment(Segment& segment) {
  if (segment.fd >= 0) ::close(segment.fd);
  segment.fd = -1;
  if (::unlink(segment.path.c_str()) != 0 && errno != ENOENT) {
    Logger("spool")->warn("spool: cannot delete {}: {}", segment.path, Errno());
  }
  dir_dirty_ = true;
}

void Spool::Append(Segment& s, Record r) {
  if (!s.records.empty() && s.records.front().boot_id != r.boot_id) s.mixed = true;
  s.records.push_back(std::move(r));
}

uint64_t Spool::AckedSeq(const std::string& boot_id) const {
  auto it = acked_.find(boot_id);
  return it == acked_.end() ? 0 : it->second;
}

std::deque<Spool::Record>::const_iterator Spool::FirstAbove(const Segment& s, uint64_t seq) {
  return std::partition_point(s.records.begin(), s.records.end(),
                              [seq](const Record& r) { return r.seq <= seq; });
}

bool Spool::IsAcked(const Record& r) const { return r.seq <= AckedSeq(r.boot_id); }

uint64_t Spool::PendingIn(const Segment& s) const {
  if (s.records.empty()) return 0;
  if (!s.mixed) {
    return static_cast<uint64_t>(s.records.end() -
                                 FirstAbove(s, AckedSeq(s.records.front().boot_id)));
  }
  uint64_t n = 0;
  for (const Record& r : s.records) n += IsAcked(r) ? 0 : 1;
  return n;
}

void Spool::DeleteAckedSegments() {
  for (auto it = segments_.begin(); it != segments_.end();) {
    const bool active = active_ok_ && std::next(it) == segments_.end();
    if (!active && PendingIn(*it) == 0) {
      DropSegment(*it);
      it = segments_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<v1::Frame> Spool::Collect(const std::string& boot_id, uint64_t after_seq,
                                      size_t max) const {
  std::vector<v1::Frame> out;
  std::string payload;
  const uint64_t floor = std::max(after_seq, AckedSeq(boot_id));
  for (const Segment& s : segments_) {
    auto it = s.records.begin();
    if (!s.mixed) {
      if (s.records.empty() || s.records.front().boot_id != boot_id) continue;
      it = FirstAbove(s, floor);
    }
    for (; it != s.records.end(); ++it) {
      const Record& r = *it;
      if (out.size() >= max) return out;
      if (r.boot_id != boot_id || r.seq <= floor) continue;
      payload.resize(r.length);
      v1::Frame frame;
      if (s.fd < 0 || !PreadAll(s.fd, payload.data(), r.length, r.offset) ||
          !frame.ParseFromString(payload)) {
        Logger("spool")->warn("spool: frame {}/{} unreadable in {}; skipped", boot_id, r.seq,
                              s.path);
        continue;
      }
      out.push_back(std::move(frame));
    }
  }
  return out;
}

std::vector<v1::Frame> Spool::After(uint64_t after_seq, size_t max) const {
  absl::MutexLock lock(&mu_);
  return Collect(options_.boot_id, after_seq, max);
}

std::vector<v1::Frame> Spool::AfterInBoot(const std::string& boot_id, uint64_t after_seq,
                                          size_t max) const {
  absl::MutexLock lock(&mu_);
  return Collect(boot_id, after_seq, max);
}

void Spool::Ack(const std::string& boot_id, uint64_t seq) {
  auto hi = highest_.find(boot_id);
  if (hi == highest_.end()) {
    ++stats_.ignored_acks;
    Logger("spool")->warn("spool: ack for unknown boot {} (seq {}) ignored", boot_id, seq);
    return;
  }
  const uint64_t current = acked_.count(boot_id) ? acked_[boot_id] : 0;
  if (seq <= current) {
    ++stats_.ignored_acks;
    Logger("spool")->debug("spool: ack {}/{} at or below {} ignored", boot_id, seq, current);
    return;
  }
  if (seq > hi->second) {
    ++stats_.clamped_acks;
    Logger("spool")->warn("spool: ack {}/{} beyond the last spooled seq {}; clamped", boot_id, seq,
                          hi->second);
    seq = hi->second;
    if (seq <= current) return;
  }
  acked_[boot_id] = seq;
  acks_dirty_ = true;
  DeleteAckedSegments();
}

void Spool::AckUpTo(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  Ack(options_.boot_id, seq);
}

void Spool::AckInBoot(const std::string& boot_id, uint64_t seq) {
  absl::MutexLock lock(&mu_);
  Ack(boot_id, seq);
}

size_t Spool::PendingInBoot(const std::string& boot_id) const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const Segment& s : segments_) {
    if (!s.mixed) {
      if (!s.records.empty() && s.records.front().boot_id == boot_id) n += PendingIn(s);
      continue;
    }
    for (const Record& r : s.records) n += (r.boot_id == boot_id && !IsAcked(r)) ? 1 : 0;
  }
  return n;
}

std::vector<std::string> Spool::PendingBoots() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const Segment& s : segments_) {
    for (const Record& r : s.records) {
      if (r.boot_id == options_.boot_id || IsAcked(r)) continue;
      if (std::find(out.begin(), out.end(), r.boot_id) == out.end()) out.push_back(r.boot_id);
    }
  }
  return out;
}

size_t Spool::size() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const Segment& s : segments_) n += PendingIn(s);
  return n;
}

uint64_t Spool::evicted() const {
  absl::MutexLock lock(&mu_);
  return stats_.evicted;
}

SpoolStats Spool::stats() const {
  absl::MutexLock lock(&mu_);
  SpoolStats out = stats_;
  out.segments = segments_.size();
  out.bytes = 0;
  out.pending = 0;
  for (const Segment& s : segments_) {
    out.bytes += s.bytes;
    out.pending += PendingIn(s);
  }
  return out;
}

std::string Spool::AckFileText() const {
  std::string text = absl::StrCat(kAckMagic, "\nevicted ", stats_.evicted, "\n");
  for (const auto& [boot, seq] : acked_) {
    // Only boots that still have frames here (or the current one) are worth remembering.
    bool live = boot == options_.boot_id;
    for (auto it = segments_.begin(); !live && it != segments_.end(); ++it) {
      live = std::any_of(it->records.begin(), it->records.end(),
                         [&boot = boot](const Record& r) { return r.boot_id == boot; });
    }
    if (live) absl::StrAppend(&text, "ack ", boot, " ", seq, "\n");
  }
  return text;
}

void Spool::Sync(bool all) {
  absl::MutexLock flush_lock(&flush_mu_);
  std::vector<int> fds;
  std::string ack_text;
  bool write_acks = false;
  bool sync_dir = false;
  uint64_t unsynced = 0;
  {
    absl::MutexLock lock(&mu_);
    fds.swap(to_sync_);
    if (active_ok_ && !segments_.empty() && stats_.unsynced > 0) {
      const int dup = ::dup(segments_.back().fd);
      if (dup >= 0) fds.push_back(dup);
    }
    unsynced = stats_.unsynced;
    const bool acks_due = all || acks_urgent_ || !acks_written_.has_value() ||
                          clock_->Now() - *acks_written_ >= options_.ack_interval;
    if (acks_dirty_ && acks_due) {
      ack_text = AckFileText();
      write_acks = true;
      acks_dirty_ = false;
      acks_urgent_ = false;
      acks_written_ = clock_->Now();
    }
    sync_dir = dir_dirty_;
    dir_dirty_ = false;
  }
  bool synced_ok = true;
  for (int fd : fds) {
    if (::fdatasync(fd) != 0) {
      synced_ok = false;
      Logger("spool")->error("spool {}: fdatasync: {}", options_.dir, Errno());
    }
    ::close(fd);
  }
  bool acks_ok = true;
  if (write_acks) {
    absl::Status s = WriteFileAtomically((fs::path(options_.dir) / kAckFile).string(), ack_text);
    if (!s.ok()) {
      acks_ok = false;
      Logger("spool")->error("spool {}: {}", options_.dir, std::string(s.message()));
    }
    sync_dir = true;
  }
  if (sync_dir) {
    const int dfd = ::open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  absl::MutexLock lock(&mu_);
  if (!acks_ok) acks_dirty_ = true;
  if (write_acks && acks_ok) ++stats_.ack_writes;
  if (synced_ok && !fds.empty()) stats_.unsynced -= std::min(stats_.unsynced, unsynced);
  // Frames appended while this sync ran, or a failed fsync, wait for the next one, due an
  // interval from now (never a tight retry loop).
  unsynced_since_ = stats_.unsynced > 0 ? std::optional<absl::Time>(clock_->Now()) : std::nullopt;
  if (!fds.empty() || write_acks || sync_dir) ++stats_.syncs;
}

void SpoolBootView::Push(v1::Frame frame) { spool_->Push(std::move(frame)); }

}  // namespace fleetwes::agent

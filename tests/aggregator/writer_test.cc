#include "aggregator/store/writer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "aggregator/metrics.h"
#include "tests/aggregator/fake_batch_store.h"
#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

using testing::FakeBatchStore;
using testing::MakeFrame;
using testing::T0;

// Collects frame outcomes by seq; Await blocks until `n` arrived.
class Outcomes {
 public:
  Writer::FrameCallback For(uint64_t seq) {
    return [this, seq](Writer::Outcome o, const absl::Status& s) {
      absl::MutexLock lock(&mu_);
      by_seq_[seq] = {o, s};
    };
  }
  void Await(size_t n) {
    absl::MutexLock lock(&mu_);
    auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return by_seq_.size() >= n; };
    mu_.Await(absl::Condition(&done));
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return by_seq_.size();
  }
  std::pair<Writer::Outcome, absl::Status> Get(uint64_t seq) {
    absl::MutexLock lock(&mu_);
    return by_seq_.at(seq);
  }

 private:
  absl::Mutex mu_;
  std::map<uint64_t, std::pair<Writer::Outcome, absl::Status>> by_seq_ ABSL_GUARDED_BY(mu_);
};

FrameRecord Record(const std::string& node, uint64_t seq) {
  auto frame = std::make_shared<v1::Frame>(MakeFrame(node, "boot", seq, T0()));
  return FrameRecord{frame, frame->SerializeAsString(), T0()};
}

class WriterTest : public ::testing::Test {
 protected:
  WriterOptions Options() {
    WriterOptions o;
    o.max_batch_frames = 10;
    o.max_batch_delay = absl::Milliseconds(20);
    o.queue_frames = 100;
    o.backoff.initial = absl::Milliseconds(1);
    o.backoff.max = absl::Milliseconds(5);
    o.flush_timeout = absl::Milliseconds(200);
    return o;
  }

  Writer::SubmitResult Submit(
      Writer& w, const std::string& node, uint64_t seq, Writer::ReadyCallback ready = [] {}) {
    FrameRecord r = Record(node, seq);
    Writer::FrameCallback cb = outcomes_.For(seq);
    return w.TrySubmitFrame(r, cb, std::move(ready));
  }

  FakeBatchStore store_;
  AggregatorMetrics metrics_;
  Outcomes outcomes_;
};

TEST_F(WriterTest, CommitsInBoundedBatchesThenCompletes) {
  Writer w(&store_, RealClock(), &metrics_, Options());
  store_.Hold();
  w.Start();
  for (uint64_t seq = 1; seq <= 25; ++seq) {
    ASSERT_EQ(Submit(w, "n1", seq), Writer::SubmitResult::kAccepted);
  }
  store_.AwaitAttempts(1);
  EXPECT_EQ(outcomes_.size(), 0u);  // nothing completes before the commit
  store_.Release();
  outcomes_.Await(25);
  for (uint64_t seq = 1; seq <= 25; ++seq) {
    EXPECT_EQ(outcomes_.Get(seq).first, Writer::Outcome::kCommitted) << seq;
  }
  const std::vector<size_t> sizes = store_.batch_sizes();
  EXPECT_EQ(std::accumulate(sizes.begin(), sizes.end(), size_t{0}), 25u);
  for (size_t s : sizes) EXPECT_LE(s, 10u);
  EXPECT_GE(sizes.size(), 3u);
  EXPECT_EQ(store_.committed().size(), 25u);
  EXPECT_EQ(metrics_.writer_queue().Value(), 0);
}

TEST_F(WriterTest, SeveralStoresSplitTheQueueByNodeAndWriteAtTheSameTime) {
  FakeBatchStore other;
  WriterOptions o = Options();
  o.queue_frames = 200;  // room for every frame while `other` is held
  Writer w(std::vector<BatchStore*>{&store_, &other}, RealClock(), &metrics_, o);
  // 40 nodes of 3 frames each: every node's frames go through one store.
  auto node = [](uint64_t seq) { return absl::StrCat("n", seq / 10); };
  std::vector<uint64_t> seqs;
  for (uint64_t n = 0; n < 40; ++n) {
    for (uint64_t k = 1; k <= 3; ++k) seqs.push_back(10 * n + k);
  }
  other.Hold();
  w.Start();
  for (uint64_t seq : seqs) EXPECT_EQ(Submit(w, node(seq), seq), Writer::SubmitResult::kAccepted);
  // The first store's nodes commit while the second store is held (40 nodes: that none of
  // them hashes to the first store has a chance of 2^-40).
  other.AwaitAttempts(1);
  outcomes_.Await(1);
  EXPECT_LT(outcomes_.size(), seqs.size());
  auto in = [](const FakeBatchStore& s, const std::string& n, uint64_t seq) {
    return s.committed().count({n, "boot", seq}) == 1;
  };
  other.Release();
  outcomes_.Await(seqs.size());
  for (uint64_t seq : seqs) {
    EXPECT_EQ(outcomes_.Get(seq).first, Writer::Outcome::kCommitted) << seq;
    EXPECT_NE(in(store_, node(seq), seq), in(other, node(seq), seq)) << seq;
    // A node's frames all went through the same store.
    EXPECT_EQ(in(store_, node(seq), seq), in(store_, node(seq), 10 * (seq / 10) + 1)) << seq;
  }
  EXPECT_EQ(metrics_.writer_queue().Value(), 0);
}

TEST_F(WriterTest, ReplayedFramesCompleteAsDuplicates) {
  Writer w(&store_, RealClock(), &metrics_, Options());
  w.Start();
  ASSERT_EQ(Submit(w, "n1", 1), Writer::SubmitResult::kAccepted);
  outcomes_.Await(1);
  Outcomes again;
  FrameRecord r = Record("n1", 1);
  Writer::FrameCallback cb = again.For(1);
  ASSERT_EQ(w.TrySubmitFrame(r, cb, [] {}), Writer::SubmitResult::kAccepted);
  again.Await(1);
  EXPECT_EQ(again.Get(1).first, Writer::Outcome::kDuplicate);
}

TEST_F(WriterTest, DatabaseOutageDelaysCompletionUntilItIsBack) {
  Writer w(&store_, RealClock(), &metrics_, Options());
  store_.FailWith(absl::UnavailableError("connection refused"));
  w.Start();
  ASSERT_EQ(Submit(w, "n1", 1), Writer::SubmitResult::kAccepted);
  store_.AwaitAttempts(3);  // retried with backoff, never completed
  EXPECT_EQ(outcomes_.size(), 0u);
  store_.FailWith(absl::OkStatus());
  outcomes_.Await(1);
  EXPECT_EQ(outcomes_.Get(1).first, Writer::Outcome::kCommitted);
}

TEST_F(WriterTest, InDoubtCommitIsRetriedSafely) {
  Writer w(&store_, RealClock(), &metrics_, Options());
  store_.FailWith(absl::UnknownError("commit in doubt"));
  w.Start();
  ASSERT_EQ(Submit(w, "n1", 1), Writer::SubmitResult::kAccepted);
  store_.AwaitAttempts(2);
  store_.FailWith(absl::OkStatus());
  outcomes_.Await(1);
  EXPECT_EQ(outcomes_.Get(1).first, Writer::Outcome::kCommitted);
}

TEST_F(WriterTest, ARefusedFrameFailsAloneAndTheRestCommit) {
  Writer w(&store_, RealClock(), &metrics_, Options());
  store_.RefuseNode("poison");
  store_.Hold();
  w.Start();
  ASSERT_EQ(Submit(w, "good", 1), Writer::SubmitResult::kAccepted);
  ASSERT_EQ(Submit(w, "poison", 2), Writer::SubmitResult::kAccepted);
  ASSERT_EQ(Submit(w, "good", 3), Writer::SubmitResult::kAccepted);
  store_.Release();
  outcomes_.Await(3);
  EXPECT_EQ(outcomes_.Get(1).first, Writer::Outcome::kCommitted);
  EXPECT_EQ(outcomes_.Get(2).first, Writer::Outcome::kFailed);
  EXPECT_EQ(outcomes_.Get(2).second.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(outcomes_.Get(3).first, Writer::Outcome::kCommitted);
}

TEST_F(WriterTest, ARefusedFrameIsIsolatedByBisection) {
  Writer w(&store_, RealClock(), &metrics_, Options());
  store_.RefuseNode("poison");
  // Queued before the thread starts: one batch of 8 with the refused frame at seq 6.
  for (uint64_t seq = 1; seq <= 8; ++seq) {
    ASSERT_EQ(Submit(w, seq == 6 ? "poison" : "good", seq), Writer::SubmitResult::kAccepted);
  }
  w.Start();
  outcomes_.Await(8);
  for (uint64_t seq = 1; seq <= 8; ++seq) {
    EXPECT_EQ(outcomes_.Get(seq).first,
              seq == 6 ? Writer::Outcome::kFailed : Writer::Outcome::kCommitted)
        << seq;
  }
  // 8 refused; 1-4 committed; 5-8 refused; 5-6 refused; 5 committed; 6 refused alone; 7-8
  // committed: 7 transactions where writing one by one would take 9.
  EXPECT_EQ(store_.attempts(), 7);
}

TEST_F(WriterTest, AFullQueueCallsBackWhenThereIsRoom) {
  WriterOptions o = Options();
  o.queue_frames = 2;
  o.max_batch_frames = 2;
  Writer w(&store_, RealClock(), &metrics_, o);
  store_.Hold();
  w.Start();
  ASSERT_EQ(Submit(w, "n1", 1), Writer::SubmitResult::kAccepted);
  ASSERT_EQ(Submit(w, "n1", 2), Writer::SubmitResult::kAccepted);
  store_.AwaitAttempts(1);  // the writer holds seqs 1-2; the queue is empty again
  ASSERT_EQ(Submit(w, "n1", 3), Writer::SubmitResult::kAccepted);
  ASSERT_EQ(Submit(w, "n1", 4), Writer::SubmitResult::kAccepted);
  absl::Notification ready;
  FrameRecord r = Record("n1", 5);
  Writer::FrameCallback cb = outcomes_.For(5);
  ASSERT_EQ(w.TrySubmitFrame(r, cb, [&ready] { ready.Notify(); }),
            Writer::SubmitResult::kQueueFull);
  EXPECT_TRUE(cb);  // handed back, not consumed
  EXPECT_EQ(r.frame->seq(), 5u);
  EXPECT_FALSE(ready.HasBeenNotified());
  store_.Release();
  ready.WaitForNotification();
  ASSERT_EQ(w.TrySubmitFrame(r, cb, [] {}), Writer::SubmitResult::kAccepted);
  outcomes_.Await(5);
}

TEST_F(WriterTest, OnlyAsManyWaitingStreamsAreWokenAsThereIsRoom) {
  WriterOptions o = Options();
  o.queue_frames = 2;
  o.max_batch_frames = 2;
  Writer w(&store_, RealClock(), &metrics_, o);
  ASSERT_EQ(Submit(w, "n1", 1), Writer::SubmitResult::kAccepted);
  ASSERT_EQ(Submit(w, "n1", 2), Writer::SubmitResult::kAccepted);
  // Three streams wait; each submits its frame when woken (on the writer thread).
  std::atomic<int> woken{0};
  std::atomic<int> parked_again{0};
  for (uint64_t seq = 3; seq <= 5; ++seq) {
    ASSERT_EQ(Submit(w, "n1", seq,
                     [this, &w, &woken, &parked_again, seq] {
                       ++woken;
                       if (Submit(w, "n1", seq, [&parked_again] { ++parked_again; }) ==
                           Writer::SubmitResult::kQueueFull) {
                         ++parked_again;
                       }
                     }),
              Writer::SubmitResult::kQueueFull);
  }
  store_.Hold();
  w.Start();
  // Taking seqs 1-2 made room for two: two streams are woken and fill it; the third waits.
  store_.AwaitAttempts(1);
  EXPECT_EQ(woken.load(), 2);
  EXPECT_EQ(parked_again.load(), 0);
  store_.Release();
  outcomes_.Await(5);
  EXPECT_EQ(woken.load(), 3);
}

TEST_F(WriterTest, StopFlushesWhatIsQueued) {
  auto w = std::make_unique<Writer>(&store_, RealClock(), &metrics_, Options());
  store_.Hold();
  w->Start();
  for (uint64_t seq = 1; seq <= 5; ++seq)
    ASSERT_EQ(Submit(*w, "n1", seq), Writer::SubmitResult::kAccepted);
  store_.Release();
  w->Stop();
  EXPECT_EQ(outcomes_.size(), 5u);
  EXPECT_EQ(store_.committed().size(), 5u);
  EXPECT_EQ(Submit(*w, "n1", 6), Writer::SubmitResult::kStopped);
}

TEST_F(WriterTest, StopGivesUpOnAnUnreachableDatabaseWithoutSuccess) {
  Writer w(&store_, RealClock(), &metrics_, Options());
  store_.FailWith(absl::UnavailableError("down"));
  w.Start();
  ASSERT_EQ(Submit(w, "n1", 1), Writer::SubmitResult::kAccepted);
  store_.AwaitAttempts(1);
  w.Stop();  // bounded by flush_timeout
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_EQ(outcomes_.Get(1).first, Writer::Outcome::kFailed);
  EXPECT_EQ(outcomes_.Get(1).second.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(store_.committed().empty());
}

TEST_F(WriterTest, NodeUpsertsTravelWithTheFrames) {
  Writer w(&store_, RealClock(), &metrics_, Options());
  w.Start();
  NodeRecord n;
  n.node_id = "n1";
  ASSERT_EQ(w.TrySubmitNode(n, [] {}), Writer::SubmitResult::kAccepted);
  ASSERT_EQ(Submit(w, "n1", 1), Writer::SubmitResult::kAccepted);
  outcomes_.Await(1);
  EXPECT_EQ(store_.node_upserts(), std::vector<std::string>{"n1"});
}

}  // namespace
}  // namespace fleetwes::aggregator

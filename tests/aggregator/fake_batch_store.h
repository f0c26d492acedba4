// A BatchStore in memory for writer and ingest tests: records what was committed, can be held
// (writes block until released) and can be made to fail.
#ifndef FLEETWES_TESTS_AGGREGATOR_FAKE_BATCH_STORE_H_
#define FLEETWES_TESTS_AGGREGATOR_FAKE_BATCH_STORE_H_

#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "aggregator/store/batch_store.h"

namespace fleetwes::aggregator::testing {

class FakeBatchStore : public BatchStore {
 public:
  using Key = std::tuple<std::string, std::string, uint64_t>;

  absl::StatusOr<std::vector<bool>> WriteBatch(
      absl::Span<const NodeRecord> nodes, absl::Span<const FrameRecord* const> frames) override {
    absl::MutexLock lock(&mu_);
    ++attempts_;
    mu_.Await(absl::Condition(
        +[](bool* held) { return !*held; }, &held_));
    if (!fail_with_.ok()) return fail_with_;
    for (const FrameRecord* f : frames) {
      if (f->frame->node_id() == refuse_node_) {
        return absl::InvalidArgumentError("refused: " + refuse_node_);
      }
    }
    std::vector<bool> inserted;
    for (const NodeRecord& n : nodes) node_upserts_.push_back(n.node_id);
    for (const FrameRecord* f : frames) {
      inserted.push_back(
          committed_.insert({f->frame->node_id(), f->frame->boot_id(), f->frame->seq()}).second);
    }
    batch_sizes_.push_back(frames.size());
    return inserted;
  }

  void Hold() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }
  void FailWith(absl::Status s) {
    absl::MutexLock lock(&mu_);
    fail_with_ = std::move(s);
  }
  // Batches holding a frame of `node_id` are refused (InvalidArgument).
  void RefuseNode(std::string node_id) {
    absl::MutexLock lock(&mu_);
    refuse_node_ = std::move(node_id);
  }
  // Blocks until at least `n` write attempts were made.
  void AwaitAttempts(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return attempts_ >= n; };
    mu_.Await(absl::Condition(&reached));
  }

  std::set<Key> committed() const {
    absl::MutexLock lock(&mu_);
    return committed_;
  }
  std::vector<size_t> batch_sizes() const {
    absl::MutexLock lock(&mu_);
    return batch_sizes_;
  }
  std::vector<std::string> node_upserts() const {
    absl::MutexLock lock(&mu_);
    return node_upserts_;
  }
  int attempts() const {
    absl::MutexLock lock(&mu_);
    return attempts_;
  }

 private:
  mutable absl::Mutex mu_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status fail_with_ ABSL_GUARDED_BY(mu_);
  std::string refuse_node_ ABSL_GUARDED_BY(mu_);
  std::set<Key> committed_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> batch_sizes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> node_upserts_ ABSL_GUARDED_BY(mu_);
  int attempts_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fleetwes::aggregator::testing

#endif  // FLEETWES_TESTS_AGGREGATOR_FAKE_BATCH_STORE_H_

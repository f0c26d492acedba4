// RequestBlock: a v1::PublishRequest built or parsed on its own arena, whose first block is part
// of the same allocation. A frame of a node with a few models and devices takes about 1.5 KiB of
// message objects, so building or parsing one costs one allocation (larger frames spill into
// blocks the arena adds itself) instead of one per sub-message and string, and one free.
// Reset() empties it for reuse. Not thread-safe; shared through a shared_ptr, a holder may reuse
// it only while no one else holds it.
#ifndef FLEETWES_COMMON_REQUEST_BLOCK_H_
#define FLEETWES_COMMON_REQUEST_BLOCK_H_

#include <google/protobuf/arena.h>

#include <cstddef>

#include "fleetwes/v1/ingest.pb.h"

namespace fleetwes {

class RequestBlock {
 public:
  RequestBlock() : arena_(ArenaOptionsFor(initial_)) {
    request_ = google::protobuf::Arena::CreateMessage<v1::PublishRequest>(&arena_);
  }
  RequestBlock(const RequestBlock&) = delete;
  RequestBlock& operator=(const RequestBlock&) = delete;

  v1::PublishRequest* request() { return request_; }
  const v1::PublishRequest& request() const { return *request_; }

  // An empty request again; the first block stays, the blocks the arena added are freed.
  void Reset() {
    arena_.Reset();
    request_ = google::protobuf::Arena::CreateMessage<v1::PublishRequest>(&arena_);
  }

 private:
  static constexpr size_t kInitialBlock = 2048;
  static google::protobuf::ArenaOptions ArenaOptionsFor(char* block) {
    google::protobuf::ArenaOptions o;
    o.initial_block = block;
    o.initial_block_size = kInitialBlock;
    return o;
  }

  alignas(std::max_align_t) char initial_[kInitialBlock];
  google::protobuf::Arena arena_;
  v1::PublishRequest* request_;
};

}  // namespace fleetwes

#endif  // FLEETWES_COMMON_REQUEST_BLOCK_H_

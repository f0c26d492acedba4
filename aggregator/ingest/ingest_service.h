// Ingest.Publish (docs/protocol.md): one bidirectional stream per agent, served with the gRPC
// callback API (no thread per stream). The first message must be a valid Hello; each frame is
// then validated, its WES recomputed with the fleet's penalty table and queued for the database
// writer. Bad frames, and frames that would take their node above its caps of distinct model
// names and device ids (NodeCardinality), get a Reject and the stream goes on. Acks are cumulative
// and sent only once the frames they cover are committed, duplicates, or rejected. When the
// writer's queue is full the stream stops reading until there is room (gRPC flow control pushes
// back to the agent). If frames cannot be stored (database unreachable at shutdown), the stream
// ends UNAVAILABLE without acknowledging them; the agent resends them. Thread-safe.
#ifndef FLEETWES_AGGREGATOR_INGEST_INGEST_SERVICE_H_
#define FLEETWES_AGGREGATOR_INGEST_INGEST_SERVICE_H_

#include <cstdint>

#include "aggregator/fleet/fleet_state.h"
#include "aggregator/ingest/node_cardinality.h"
#include "aggregator/metrics.h"
#include "aggregator/store/writer.h"
#include "common/clock.h"
#include "common/wes.h"
#include "fleetwes/v1/ingest.grpc.pb.h"

namespace fleetwes::aggregator {

struct IngestOptions {
  int64_t max_frame_bytes = 65536;
  ThermalPenalties penalties;
  // Frames whose window ended longer ago than this are refused as expired (the frames retention).
  absl::Duration max_frame_age = absl::InfiniteDuration();
  // Distinct model names and device ids per node (refused beyond, reason "cardinality").
  CardinalityLimits cardinality;
};

class IngestService final : public v1::Ingest::CallbackService {
 public:
  // All pointers must outlive the service and every stream it served: stop the gRPC server,
  // then the writer (which completes every pending frame), then destroy these.
  IngestService(Writer* writer, FleetState* state, Clock* clock, AggregatorMetrics* metrics,
                IngestOptions options);

  grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResponse>* Publish(
      grpc::CallbackServerContext* context) override;

  struct Deps {
    Writer* writer;
    FleetState* state;
    Clock* clock;
    AggregatorMetrics* metrics;
    IngestOptions options;
    NodeCardinality* cardinality;
  };

 private:
  NodeCardinality cardinality_;
  Deps deps_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_INGEST_INGEST_SERVICE_H_

// The aggregator's own WES: every Wes in a frame is recomputed from its inputs with the fleet's
// penalty table (common ComputeWes), so one table ranks the whole fleet and every surface serves
// the same numbers. Pure; thread-safe.
#ifndef FLEETWES_AGGREGATOR_INGEST_RECOMPUTE_WES_H_
#define FLEETWES_AGGREGATOR_INGEST_RECOMPUTE_WES_H_

#include "common/wes.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::aggregator {

// Replaces frame->node_wes and every models[i].wes with values recomputed from their inputs:
//  - tokens/s: Wes.tokens_per_s; for a model whose Wes carries none, decode_tokens_per_s;
//  - watts: Wes.watts; for a model whose Wes carries none, watts_attributed; else absent;
//  - PUE: Wes.pue, else the frame's pue, else 1.0;
//  - thermal state: Wes.thermal_state, else the frame's thermal_state, else NORMAL;
//  - power scopes: Wes.power_scopes.
// Precondition: the frame passed ValidateFrame.
void RecomputeWes(const ThermalPenalties& penalties, v1::Frame* frame);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_INGEST_RECOMPUTE_WES_H_

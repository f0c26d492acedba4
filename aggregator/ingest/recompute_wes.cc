#include "aggregator/ingest/recompute_wes.h"

#include <optional>

namespace fleetwes::aggregator {

namespace {

WesInputs InputsOf(const v1::Wes& w, const v1::Frame& frame) {
  WesInputs in;
  if (w.tokens_per_s() > 0) in.tokens_per_s = w.tokens_per_s();
  if (w.has_watts()) in.watts = w.watts();
  in.pue = w.pue() > 0 ? w.pue() : (frame.pue() > 0 ? frame.pue() : 1.0);
  in.thermal_state = w.thermal_state() != v1::THERMAL_STATE_UNSPECIFIED ? w.thermal_state()
                     : frame.thermal_state() != v1::THERMAL_STATE_UNSPECIFIED
                         ? frame.thermal_state()
                         : v1::THERMAL_STATE_NORMAL;
  for (int scope : w.power_scopes()) in.power_scopes.push_back(static_cast<v1::PowerScope>(scope));
  return in;
}

}  // namespace

void RecomputeWes(const ThermalPenalties& penalties, v1::Frame* frame) {
  for (v1::ModelSample& m : *frame->mutable_models()) {
    WesInputs in = InputsOf(m.wes(), *frame);
    if (!in.tokens_per_s.has_value() && m.has_decode_tokens_per_s() &&
        m.decode_tokens_per_s() > 0) {
      in.tokens_per_s = m.decode_tokens_per_s();
    }
    if (!in.watts.has_value() && m.has_watts_attributed()) in.watts = m.watts_attributed();
    *m.mutable_wes() = ComputeWes(in, penalties);
  }
  *frame->mutable_node_wes() = ComputeWes(InputsOf(frame->node_wes(), *frame), penalties);
}

}  // namespace fleetwes::aggregator

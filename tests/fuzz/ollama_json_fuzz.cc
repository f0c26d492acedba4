// Fuzz target for the Ollama parsers: the input is read as an /api/ps body, an /api/version
// body, one generate/chat object, and as a response stream fed to ResponseMeter in pieces whose
// sizes come from the input. Aborts when an invariant of those functions breaks.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "agent/collectors/ollama_json.h"

namespace {

namespace ollama = fleetwes::agent::ollama;

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckFinal(const ollama::FinalObject& f) {
  constexpr uint64_t kMax = uint64_t{1} << 53;
  for (const auto& v : {f.prompt_eval_count, f.prompt_eval_duration_ns, f.eval_count,
                        f.eval_duration_ns, f.load_duration_ns, f.total_duration_ns}) {
    if (v.has_value()) Check(*v <= kMax);
  }
  Check(f.model.size() <= ollama::kMaxModelNameBytes);
  Check(f.done_reason.size() <= 32);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto ps = ollama::ParsePs(text); ps.ok()) {
    Check(ps->size() <= ollama::kMaxPsModels);
    for (const ollama::PsModel& m : *ps) {
      Check(!m.name.empty() && m.name.size() <= ollama::kMaxModelNameBytes);
      if (m.cpu_offload()) Check(*m.size_vram < *m.size);
      Check(!ollama::NormalizeModel(m.name).empty());
    }
  }
  if (auto v = ollama::ParseVersion(text); v.ok()) Check(!v->empty() && v->size() <= 64);
  if (auto c = ollama::ParseChunk(text); c.ok() && c->done) CheckFinal(c->final);

  const absl::Time t0 = absl::FromUnixSeconds(1);
  for (bool ndjson : {true, false}) {
    ollama::ResponseMeter meter(ndjson, /*max_object_bytes=*/4096);
    size_t pos = 0;
    size_t step = size > 0 ? 1 + data[0] % 61 : 1;
    while (pos < size) {
      const size_t n = std::min(step, size - pos);
      meter.Feed(text.substr(pos, n), t0 + absl::Milliseconds(pos));
      pos += n;
      step = 1 + (step * 7) % 113;
    }
    const ollama::ResponseOutcome o = meter.Finish(t0 + absl::Seconds(60));
    if (o.final.has_value()) CheckFinal(*o.final);
    if (o.first_output.has_value()) Check(*o.first_output >= t0);
  }
  return 0;
}

// Parsers for Ollama's REST bodies: /api/version, /api/ps, and the generate/chat responses
// (NDJSON streams or one JSON object) whose final object (`done: true`) carries the request's
// timings in nanoseconds. Only numbers, model names and flags are kept: prompt and output text
// is looked at to tell whether a chunk carries output and is never copied out.
// Pure functions and a per-request meter; no I/O. Never throw. Fuzzed (tests/fuzz).
#ifndef FLEETWES_AGENT_COLLECTORS_OLLAMA_JSON_H_
#define FLEETWES_AGENT_COLLECTORS_OLLAMA_JSON_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fleetwes::agent::ollama {

// Longest model name accepted from the engine or a client.
inline constexpr size_t kMaxModelNameBytes = 256;
// Most models one /api/ps answer may list.
inline constexpr size_t kMaxPsModels = 1024;

// One resident model of /api/ps.
struct PsModel {
  std::string name;                   // e.g. "llama3.2:1b"
  std::optional<uint64_t> size;       // bytes the model takes in memory (VRAM + RAM)
  std::optional<uint64_t> size_vram;  // bytes of it in VRAM
  std::string expires_at;             // keep-alive deadline as sent (RFC 3339); "" when absent
  std::string quantization_level;     // details.quantization_level; "" when absent

  // size_vram < size: part of the model runs on the CPU (much slower).
  bool cpu_offload() const { return size && size_vram && *size_vram < *size; }
};

// {"version":"0.11.6"}: the version string (at most 64 bytes). InvalidArgument otherwise.
absl::StatusOr<std::string> ParseVersion(std::string_view body);

// {"models":[...]}: every listed model. InvalidArgument when the body is not a JSON object with
// a "models" array (null reads as empty), a model has no name, or a size is not a
// non-negative integer.
absl::StatusOr<std::vector<PsModel>> ParsePs(std::string_view body);

// "llama3.2" and "llama3.2:latest" name the same model: a name without a tag gets ":latest".
std::string NormalizeModel(std::string_view name);

// The timings of a final object. Every field is absent when the engine omitted it (Ollama
// omits empty fields); durations are nanoseconds.
struct FinalObject {
  std::string model;
  std::string done_reason;  // "stop", "length", "unload", ... (at most 32 bytes)
  std::optional<uint64_t> prompt_eval_count;
  std::optional<uint64_t> prompt_eval_duration_ns;
  std::optional<uint64_t> eval_count;
  std::optional<uint64_t> eval_duration_ns;
  std::optional<uint64_t> load_duration_ns;
  std::optional<uint64_t> total_duration_ns;
};

// What one generate/chat object says.
struct ChunkInfo {
  bool done = false;
  bool has_output = false;  // non-empty response, message.content/thinking or tool calls
  bool error = false;       // {"error": "..."}
  FinalObject final;        // filled when done
};

// One JSON object of a generate/chat response. InvalidArgument when it is not a JSON object,
// `done` is not a boolean, or a count or duration is negative, fractional or not a number.
absl::StatusOr<ChunkInfo> ParseChunk(std::string_view json);

// The outcome of one generate/chat response as a meter saw it.
struct ResponseOutcome {
  std::optional<FinalObject> final;
  std::optional<absl::Time> first_output;  // when the first chunk carrying output arrived
  bool error = false;                      // an {"error":...} object was seen
  uint64_t parse_errors = 0;               // lines or bodies that were not valid objects
  uint64_t oversized = 0;                  // lines longer than the meter's cap (skipped)
};

// Reads a generate/chat response as it streams past, without keeping its text: in NDJSON mode
// each complete line is parsed and dropped; in JSON mode (stream:false answers, possibly pretty
// printed) the body is parsed once at Finish(). A line or body longer than `max_object_bytes` is
// skipped and counted. Not thread-safe.
class ResponseMeter {
 public:
  static constexpr size_t kDefaultMaxObjectBytes = 8 << 20;

  explicit ResponseMeter(bool ndjson, size_t max_object_bytes = kDefaultMaxObjectBytes);
  // `now` stamps the first chunk that carries output.
  void Feed(std::string_view data, absl::Time now);
  // Parses what is left (an unterminated last line, or the JSON body) and returns the outcome.
  ResponseOutcome Finish(absl::Time now);

 private:
  void Object(std::string_view json, absl::Time now);

  const bool ndjson_;
  const size_t max_object_bytes_;
  std::string pending_;
  bool skipping_ = false;  // inside a line that exceeded the cap
  ResponseOutcome outcome_;
};

}  // namespace fleetwes::agent::ollama

#endif  // FLEETWES_AGENT_COLLECTORS_OLLAMA_JSON_H_

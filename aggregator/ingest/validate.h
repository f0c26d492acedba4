// Validation of what agents send: the Hello that opens a stream and every Frame after it.
// Everything from outside is checked before it reaches the store or the fleet state: key,
// sequence, windows, finiteness and ranges of numbers, known enum values, repeated-field counts,
// string lengths and characters, serialized size. Pure functions; thread-safe.
#ifndef FLEETWES_AGGREGATOR_INGEST_VALIDATE_H_
#define FLEETWES_AGGREGATOR_INGEST_VALIDATE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fleetwes/v1/ingest.pb.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::aggregator {

// Caps (docs/protocol.md, "Limits"; docs/api.md).
inline constexpr size_t kMaxIdLength = 128;    // node_id, boot_id, device/engine ids
inline constexpr size_t kMaxNameLength = 256;  // model, device name, label value
inline constexpr size_t kMaxTextLength = 512;  // endpoints, reasons
inline constexpr size_t kMaxLabelKeyLength = 128;
inline constexpr int kMaxLabels = 64;
inline constexpr size_t kMaxLabelBytes = 4096;  // all keys and values of one Hello together
inline constexpr int kMaxDevices = 64;
inline constexpr int kMaxEngines = 64;
inline constexpr int kMaxModels = 256;
inline constexpr int kMaxPowerScopes = 8;
inline constexpr double kMaxIntervalS = 3600;
inline constexpr absl::Duration kMaxWindow = absl::Hours(1);
inline constexpr absl::Duration kMaxClockSkew = absl::Minutes(5);

// Why a frame was refused; the label of fleetwes_ingest_frames_rejected_total{reason}.
enum class RejectReason {
  kKeyMismatch,  // node_id/boot_id differ from the stream's Hello
  kSeq,          // seq 0, beyond int64, or not above the stream's previous seq
  kWindow,       // window bounds missing, invalid, out of order, or too long
  kTooLarge,     // serialized frame above max_frame_bytes
  kTooMany,      // a repeated field above its cap
  kString,       // a string empty where required, too long, or with control characters
  kNonFinite,    // NaN or infinity
  kOutOfRange,   // a number outside its domain (negative watts, KV use above 1, ...)
  kEnum,         // an enum value this aggregator does not know
  kStore,        // the database refused the frame for good
  kExpired,      // window ended before the frames retention: it would be dropped at once
  kClockSkew,    // window ends more than kMaxClockSkew after the aggregator's clock, or before 2020
  kCardinality,  // the node's distinct model names or device ids would exceed their caps
};
inline constexpr std::array<RejectReason, 13> kAllRejectReasons = {
    RejectReason::kKeyMismatch, RejectReason::kSeq,        RejectReason::kWindow,
    RejectReason::kTooLarge,    RejectReason::kTooMany,    RejectReason::kString,
    RejectReason::kNonFinite,   RejectReason::kOutOfRange, RejectReason::kEnum,
    RejectReason::kStore,       RejectReason::kExpired,    RejectReason::kClockSkew,
    RejectReason::kCardinality};
// "key_mismatch", "seq", "window", "too_large", "too_many", "string", "non_finite",
// "out_of_range", "enum", "store", "expired", "clock_skew", "cardinality".
absl::string_view RejectReasonName(RejectReason r);

// One refusal: the path of the first offending field relative to the frame
// ("models[0].decode_tokens_per_s", "window_end", "frame" for the whole message) and a message.
struct Rejection {
  RejectReason reason;
  std::string field;
  std::string message;
};

// True for 1..128 characters of [A-Za-z0-9._:-].
bool IsValidNodeId(absl::string_view id);

// OK, or InvalidArgument whose message starts with the field path ("hello.node_id: ...").
absl::Status ValidateHello(const v1::Hello& hello);

struct FrameContext {
  absl::string_view node_id;  // from the stream's Hello
  absl::string_view boot_id;
  size_t serialized_bytes = 0;  // the frame's encoded size
  int64_t max_frame_bytes = 65536;
  absl::Time now;  // the aggregator's clock, to refuse windows in the future
  // Windows ending before this are refused as expired (now - frames retention).
  absl::Time oldest_window_end = absl::InfinitePast();
};

// nullopt when the frame is acceptable; otherwise the first problem found. Does not check the
// order of seq within a stream (the stream does).
std::optional<Rejection> ValidateFrame(const v1::Frame& frame, const FrameContext& ctx);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_INGEST_VALIDATE_H_

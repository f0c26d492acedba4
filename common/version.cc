#include "common/version.h"

namespace fleetwes {
std::string_view Version() { return FLEETWES_VERSION_STRING; }
}  // namespace fleetwes

// The fleetwes version, from the project() call in CMakeLists.txt.
#ifndef FLEETWES_COMMON_VERSION_H_
#define FLEETWES_COMMON_VERSION_H_

#include <string_view>

namespace fleetwes {
std::string_view Version();
}  // namespace fleetwes

#endif  // FLEETWES_COMMON_VERSION_H_

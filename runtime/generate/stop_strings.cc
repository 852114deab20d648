#include "runtime/generate/stop_strings.h"

#include <algorithm>

namespace accllm {

StopStringMatcher::Result StopStringMatcher::Push(std::string_view text, bool final) {
  pending_.append(text);
  std::size_t first = std::string::npos;
  for (const std::string& stop : stop_strings_) first = std::min(first, pending_.find(stop));
  if (first != std::string::npos) {
    Result result{pending_.substr(0, first), true};
    pending_.clear();
    return result;
  }
  std::size_t hold = 0;
  if (!final) {
    for (const std::string& stop : stop_strings_) {
      for (std::size_t k = std::min(stop.size() - 1, pending_.size()); k > hold; --k) {
        if (std::string_view(pending_).substr(pending_.size() - k) == std::string_view(stop).substr(0, k)) {
          hold = k;
          break;
        }
      }
    }
  }
  Result result{pending_.substr(0, pending_.size() - hold), false};
  pending_.erase(0, pending_.size() - hold);
  return result;
}

}  // namespace accllm

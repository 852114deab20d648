// Cuts streamed text exactly before the first stop string, holding back any tail that could
// still turn into one, so that no streamed byte ever has to be taken back.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace accllm {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stop_strings)
      : stop_strings_(std::move(stop_strings)) {}

  struct Result {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string was found; `text` ends right before it
  };
  // `final` = no more text will come: nothing is held back.
  Result Push(std::string_view text, bool final);

 private:
  std::vector<std::string> stop_strings_;
  std::string pending_;
};

}  // namespace accllm

// "host:port" addresses as the daemon and the gateway take them on their command lines.
#pragma once

#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace accllm {

// "host:port" → (host, port), IPv6 hosts in brackets ("[::1]:80") without them; port 0 allowed
// (pick a free one). INVALID_ARGUMENT names the address.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address);

}  // namespace accllm

// Comma-separated integer lists on the command line (--batches 1,16,64, --contexts 128,4096).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace accllm {

// The integers in `text`, each in [1, max], or INVALID_ARGUMENT naming `what` and the item at
// fault ("bad batch size 'x': want integers from 1 to 4096"), or "no <what> given" for none. With
// `zero_means_none`, a lone "0" is the empty list (bench --prefills 0: no prefill runs).
absl::StatusOr<std::vector<int64_t>> ParsePositiveList(absl::string_view text, absl::string_view what, int64_t max,
                                                       bool zero_means_none = false);

}  // namespace accllm

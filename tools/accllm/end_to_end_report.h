// The end-to-end scale training's report on stderr, as `quantize` (its last stage) and `refine`
// print it.
#pragma once

#include "runtime/quant/train/end_to_end.h"

namespace accllm::cli {

void PrintEndToEndReport(const EndToEndReport& report);

}  // namespace accllm::cli

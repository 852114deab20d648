// Quantization allocates and frees buffers of hundreds of MB per layer and matrix (a 7B layer's
// weights, activations, Gram matrices, factors). glibc hands every chunk over 32 MB straight back
// to the kernel when it is freed (mmap), so each layer faults gigabytes of fresh zero pages in
// again: on a VM, 18% of a Llama-2-7B quantization's CPU time went to the kernel. Called at the
// start of a one-shot command, this keeps freed memory in the process for the next layer to reuse
// (bench-quantize --shape llama2-7b --pipeline: 1.2-1.3x; peak memory a few percent higher).
#pragma once

namespace accllm::cli {

void ReuseFreedMemory();

}  // namespace accllm::cli

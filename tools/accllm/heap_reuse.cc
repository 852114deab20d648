#include "tools/accllm/heap_reuse.h"

#include <malloc.h>

#include <climits>

namespace accllm::cli {

void ReuseFreedMemory() {
  mallopt(M_MMAP_MAX, 0);                   // large chunks from the heap, not from mmap
  mallopt(M_TRIM_THRESHOLD, INT_MAX);       // and its free top kept (up to 2 GB)
}

}  // namespace accllm::cli

#include "runtime/kv/page_pool.h"

#include <cassert>

namespace accllm {

PagePool::PagePool(int pages) : in_use_(pages, false) {
  free_.reserve(pages);
  for (int p = pages - 1; p >= 0; --p) free_.push_back(p);
}

std::optional<int> PagePool::Allocate() {
  if (free_.empty()) return std::nullopt;
  const int page = free_.back();
  free_.pop_back();
  in_use_[page] = true;
  return page;
}

void PagePool::Free(int page) {
  assert(page >= 0 && page < total() && in_use_[page] && "double free or foreign page");
  in_use_[page] = false;
  free_.push_back(page);
}

}  // namespace accllm

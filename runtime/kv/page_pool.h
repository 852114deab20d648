// A fixed set of KV pages of one device and the free list they are handed out from.
// Not thread-safe: one device worker owns it.
#pragma once

#include <optional>
#include <vector>

namespace accllm {

class PagePool {
 public:
  explicit PagePool(int pages);
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  // A free page, or nullopt when all are in use (expected: the caller refuses or waits).
  std::optional<int> Allocate();
  // note: call only with a page from Allocate() that was not freed since.
  void Free(int page);

  int total() const { return static_cast<int>(in_use_.size()); }
  int free_count() const { return static_cast<int>(free_.size()); }
  int used() const { return total() - free_count(); }

 private:
  std::vector<int> free_;  // LIFO: recently freed pages are warm in cache
  std::vector<bool> in_use_;
};

}  // namespace accllm

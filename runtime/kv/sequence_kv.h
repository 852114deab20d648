// The block table of one sequence: which physical page holds each logical page of its KV cache,
// with Λ eviction. Logical page k holds positions [k * page_tokens, (k + 1) * page_tokens).
//
//   | sink pages (kept for life) | evicted ... | window pages (a deque, oldest first) |
//
// After Reserve() and Evict() for a step whose last position is m, the sequence holds at most
// ceil(sinks / P) + ceil(window / P) + 1 pages; during a prefill chunk of C tokens the window
// part spans up to window + C - 1 positions (see MaxPages).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "runtime/kv/lambda_attention.h"
#include "runtime/kv/page_pool.h"

namespace accllm {

class SequenceKv {
 public:
  SequenceKv(PagePool& pool, int page_tokens, const LambdaConfig& lambda);
  ~SequenceKv();  // returns every page to the pool
  SequenceKv(const SequenceKv&) = delete;
  SequenceKv& operator=(const SequenceKv&) = delete;

  // Makes sure pages exist for positions [length(), length() + count). On ResourceExhausted
  // nothing has changed.
  absl::Status Reserve(int count);
  // Records that `count` more positions were written (after Reserve).
  void Advance(int count) { length_ += count; }
  // Frees the pages no query at position >= `next_query` can see.
  void Evict(int64_t next_query);
  void Release();

  int64_t length() const { return length_; }
  // Physical page of `position`. note: call only for positions a live query can see.
  int PageOf(int64_t position) const;
  int pages_held() const { return static_cast<int>(sink_pages_.size() + window_pages_.size()); }
  int page_tokens() const { return page_tokens_; }

  // State a backend keeps per sequence beyond the pages (e.g. the reference backend's
  // contiguous cache); destroyed with the sequence.
  std::shared_ptr<void>& backend_state() { return backend_state_; }
  const LambdaConfig& lambda() const { return lambda_; }

  // Pages a sequence may hold at once, for prefill chunks of up to `chunk` tokens and a total
  // length of `max_length` positions: what admission control reserves.
  static int MaxPages(const LambdaConfig& lambda, int page_tokens, int chunk, int64_t max_length);

 private:
  int sink_page_count() const;

  PagePool& pool_;
  int page_tokens_;
  LambdaConfig lambda_;
  int64_t length_ = 0;
  std::vector<int> sink_pages_;
  std::deque<int> window_pages_;
  int64_t first_window_page_ = 0;  // logical index of window_pages_.front()
  std::shared_ptr<void> backend_state_;
};

}  // namespace accllm

#include "runtime/kv/sequence_kv.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_cat.h"

namespace accllm {

SequenceKv::SequenceKv(PagePool& pool, int page_tokens, const LambdaConfig& lambda)
    : pool_(pool), page_tokens_(page_tokens), lambda_(lambda) {
  first_window_page_ = sink_page_count();
}

SequenceKv::~SequenceKv() { Release(); }

int SequenceKv::sink_page_count() const {
  return lambda_.full() ? 0 : (lambda_.sinks + page_tokens_ - 1) / page_tokens_;
}

absl::Status SequenceKv::Reserve(int count) {
  const int64_t last_page = (length_ + count - 1) / page_tokens_;
  std::vector<int> fresh;
  const auto rollback = [&] {
    for (int p : fresh) pool_.Free(p);
  };
  const int64_t sink_pages = sink_page_count();
  const int64_t next_sink = static_cast<int64_t>(sink_pages_.size());
  const int64_t next_window = first_window_page_ + static_cast<int64_t>(window_pages_.size());
  for (int64_t page = std::min(next_sink, next_window); page <= last_page; ++page) {
    const bool is_sink = page < sink_pages;
    if ((is_sink && page < next_sink) || (!is_sink && page < next_window)) continue;
    const std::optional<int> physical = pool_.Allocate();
    if (!physical) {
      rollback();
      return absl::ResourceExhaustedError(absl::StrCat("KV page pool exhausted (", pool_.total(), " pages)"));
    }
    fresh.push_back(*physical);
  }
  std::size_t i = 0;
  for (int64_t page = std::min(next_sink, next_window); page <= last_page; ++page) {
    const bool is_sink = page < sink_pages;
    if ((is_sink && page < next_sink) || (!is_sink && page < next_window)) continue;
    (is_sink ? sink_pages_.push_back(fresh[i]) : window_pages_.push_back(fresh[i]));
    ++i;
  }
  return absl::OkStatus();
}

void SequenceKv::Evict(int64_t next_query) {
  if (lambda_.full()) return;
  const int64_t window_start = lambda_.WindowStart(next_query);
  // A window page goes once its last position is before the window.
  while (!window_pages_.empty() && (first_window_page_ + 1) * page_tokens_ - 1 < window_start) {
    pool_.Free(window_pages_.front());
    window_pages_.pop_front();
    ++first_window_page_;
  }
  if (window_pages_.empty()) {
    first_window_page_ = std::max(first_window_page_, window_start / page_tokens_);
  }
}

void SequenceKv::Release() {
  for (int p : sink_pages_) pool_.Free(p);
  for (int p : window_pages_) pool_.Free(p);
  sink_pages_.clear();
  window_pages_.clear();
  first_window_page_ = sink_page_count();
}

int SequenceKv::PageOf(int64_t position) const {
  const int64_t page = position / page_tokens_;
  if (page < static_cast<int64_t>(sink_pages_.size())) return sink_pages_[page];
  assert(page >= first_window_page_ && page - first_window_page_ < static_cast<int64_t>(window_pages_.size()));
  return window_pages_[page - first_window_page_];
}

int SequenceKv::MaxPages(const LambdaConfig& lambda, int page_tokens, int chunk, int64_t max_length) {
  const int64_t all = (max_length + page_tokens - 1) / page_tokens;
  if (lambda.full()) return static_cast<int>(all);
  const int64_t sink = (lambda.sinks + page_tokens - 1) / page_tokens;
  const int64_t window = (int64_t{lambda.window} + chunk - 1 + page_tokens - 1) / page_tokens + 1;
  return static_cast<int>(std::min(all, sink + window));
}

}  // namespace accllm

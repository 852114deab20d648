// Λ-shaped attention: a query at position m sees the first `sinks` tokens and the last `window`
// tokens (m - window + 1 .. m). The KV cache of a sequence is therefore bounded however long it
// runs (cf. StreamingLLM, LM-Infinite).
//
// Position scheme: keys are stored rotated (RoPE) by their absolute position, once, and never
// touched again. A window key at n is scored with the query rotated by its true position m
// (distance m - n < window). A sink key that has left the window is scored with the query
// rotated by min(m, sinks + window - 1), so its distance never exceeds sinks + window - 1: no
// distance the model did not see in training when sinks + window <= its context. For
// m < sinks + window this is exactly full causal attention.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace accllm {

struct LambdaConfig {
  int sinks = 4;
  int window = std::numeric_limits<int>::max();  // "full attention" when >= the sequence length

  bool full() const { return window == std::numeric_limits<int>::max(); }
  bool Visible(int64_t query, int64_t key) const {
    return key <= query && (key < sinks || query - key < window);
  }
  bool InWindow(int64_t query, int64_t key) const { return key <= query && query - key < window; }
  // The position the query takes when scoring sink keys outside the window.
  int64_t SinkQueryPosition(int64_t query) const {
    const int64_t cap = int64_t{sinks} + window - 1;
    return query < cap ? query : cap;
  }
  // First position a query at `query` (or later) still needs, apart from the sinks.
  int64_t WindowStart(int64_t query) const { return full() ? 0 : query - window + 1; }
  // What a query at `query` reads: the sinks outside its window, [0, SinkEnd), then its window,
  // [VisibleWindowStart, query].
  int64_t VisibleWindowStart(int64_t query) const { return std::max<int64_t>(0, WindowStart(query)); }
  int64_t SinkEnd(int64_t query) const { return full() ? 0 : std::min<int64_t>(sinks, VisibleWindowStart(query)); }
};

// Defaults: 4 sink tokens (StreamingLLM) and a window of half the trained context.
inline LambdaConfig DefaultLambda(int trained_context) { return {4, trained_context / 2}; }

}  // namespace accllm

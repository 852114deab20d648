// Continuous (iteration-level) batching of generation requests onto one Backend.
//
// Each Step: drop cancelled and expired requests; admit waiting ones (highest priority first,
// then oldest) while their worst-case KV pages fit, so a running stream is never stalled for
// memory; run one prefill chunk of at most one sequence (long prompts are cut into chunks so
// running streams keep flowing); then one decode step for every sequence that has a token to
// decode, batched. Requests join and leave the batch between steps.
//
// Submit and Cancel may be called from any thread; Step from one thread (the device worker).
// Event callbacks run on the stepping thread and must not block; they may call Cancel.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/backend.h"
#include "runtime/generate/token_stream.h"
#include "runtime/tokenizer/tokenizer.h"

namespace accllm {

struct SchedulerOptions {
  int max_running = 16;     // sequences decoded together
  int max_waiting = 64;     // bounded wait queue; beyond it Submit refuses
  int prefill_chunk = 64;   // prompt tokens per step
  int max_length = 0;       // prompt + generated tokens per sequence; 0 = the model's context
};

struct StreamEvent {
  uint64_t request_id = 0;
  int token = -1;           // -1 on a final event that carries no token (cancel, deadline, error)
  std::string text;         // text made final by this event
  std::optional<FinishReason> finish;  // set on the last event of a request
  absl::Status error;       // set, with finish, when the device failed
  std::optional<TokenLogprobs> logprobs;  // when the request asked for them
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double queue_seconds = 0;  // from Submit to admission (to the end, for a request never admitted)
};

struct ScheduledRequest {
  std::vector<int> prompt_ids;  // BOS included
  GenerationOptions options;
  int priority = 0;             // higher runs first
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::function<void(const StreamEvent&)> on_event;
};

class Scheduler {
 public:
  Scheduler(Backend& backend, const Tokenizer& tokenizer, const SchedulerOptions& options);
  ~Scheduler();

  // INVALID_ARGUMENT for a bad request, RESOURCE_EXHAUSTED when the queue is full or the request
  // could never fit in the device's KV pool.
  absl::StatusOr<uint64_t> Submit(ScheduledRequest request);
  // Ends a waiting or running request at the next step (its last event says kCancelled).
  void Cancel(uint64_t id);
  // Ends every request waiting or running now (shutdown).
  void CancelAll();

  // One iteration; returns true while requests are waiting or running.
  bool Step();

  // True when `request` would be admitted at the next step: nothing waits, a batch slot is free
  // and its worst-case pages are.
  bool HasRoomFor(const ScheduledRequest& request) const;

  struct Load {
    int waiting = 0;
    int running = 0;
    int max_running = 0;
    int max_waiting = 0;
    int reserved_pages = 0;  // worst case held for running requests
    int pages_in_use = 0;    // as of the end of the last step
    int pages_total = 0;
  };
  Load load() const;
  int waiting() const;
  int running() const;
  int reserved_pages() const;

 private:
  struct Pending {
    uint64_t id;
    ScheduledRequest request;
    int pages;  // worst case
    std::chrono::steady_clock::time_point submitted;
  };
  struct Active;

  int WorstCasePages(const ScheduledRequest& request) const;
  void Finish(Active& active, FinishReason reason, absl::Status error = absl::OkStatus());
  void Emit(Active& active, const TokenStream::Step& step);
  void RemoveFinished();

  Backend& backend_;
  const Tokenizer& tokenizer_;
  SchedulerOptions options_;

  mutable std::mutex mutex_;
  std::vector<Pending> waiting_;   // guarded by mutex_
  std::set<uint64_t> cancelled_;   // guarded by mutex_
  uint64_t cancel_below_ = 0;      // guarded by mutex_: ids below it are cancelled
  uint64_t next_id_ = 1;           // guarded by mutex_
  int running_count_ = 0;          // guarded by mutex_ (a snapshot for other threads)
  int reserved_ = 0;               // guarded by mutex_
  int pages_in_use_ = 0;           // guarded by mutex_ (a snapshot of the pool)

  std::vector<std::unique_ptr<Active>> running_;  // the stepping thread only
  std::vector<float> logits_;
};

}  // namespace accllm

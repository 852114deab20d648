// Continuous (iteration-level) batching of generation requests onto one Backend.
//
// Each Step: drop cancelled and expired requests; admit waiting ones (highest priority first,
// then oldest) while their worst-case KV pages fit, so a running stream is never stalled for
// memory; run one prefill chunk of at most one sequence (long prompts are cut into chunks so
// running streams keep flowing); then one decode step for every sequence that has a token to
// decode, batched. Requests join and leave the batch between steps.
//
// When the device fails (a Prefill or Decode error that is a device fault, see Backend) and a
// failure handler is set, the scheduler stops taking work and hands every request it holds, with
// its generation state, to the handler, which can Adopt them on another device: the stream goes
// on there after re-reading its tokens, without losing or repeating one. Without a handler they
// end with FinishReason::kError. An error that says a request asked more than the device can do
// ends the requests of that step with kError and leaves the device in service; admission checks
// the device's limits (its KV pool, its attention span) so that it does not happen.
//
// Submit, Adopt and Cancel may be called from any thread; Step from one thread (the device
// worker). Event callbacks run on the stepping thread and must not block; they may call Cancel.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
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
  std::string device = {};  // reported in every event
};

struct PromptTokenLogprob {
  int token = 0;
  TokenLogprobs logprobs;  // the token's, and options.logprobs' likeliest alternatives (at least 0)
};

struct StreamEvent {
  uint64_t request_id = 0;
  int token = -1;           // -1 on a final event that carries no token (cancel, deadline, error)
  std::string text;         // text made final by this event
  std::optional<FinishReason> finish;  // set on the last event of a request
  absl::Status error;       // set, with finish, when the device failed
  std::optional<TokenLogprobs> logprobs;  // when the request asked for them
  // With ScheduledRequest::prompt_logprobs, an event with no token carries the log-probabilities
  // of prompt tokens, in order, BOS included: nothing predicts the first, whose logprob is 0 with
  // no alternatives.
  std::vector<PromptTokenLogprob> prompt_logprobs;
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double queue_seconds = 0;  // from Submit to admission (to the end, for a request never admitted)
  std::string device;        // the scheduler's device
};

struct ScheduledRequest {
  std::vector<int> prompt_ids;  // BOS included
  GenerationOptions options;
  int priority = 0;             // higher runs first
  bool prompt_logprobs = false;  // score the prompt: StreamEvent::prompt_logprobs
  bool prompt_only = false;      // generate nothing: read (and score) the prompt, then end (kMaxTokens)
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::function<void(const StreamEvent&)> on_event;
  // Set from any thread to cancel at the next step, whichever device the request is on by then.
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
};

// A request and its progress: its sequence on this device, its generation state, what is left
// to read. Moves between schedulers when a device fails.
struct InFlightRequest {
  uint64_t id = 0;  // this scheduler's
  ScheduledRequest request;
  int pages = 0;    // worst case, reserved while running
  std::chrono::steady_clock::time_point submitted;
  double queue_seconds = 0;
  std::unique_ptr<SequenceKv> seq;
  std::unique_ptr<TokenStream> stream;  // null until admitted the first time
  std::vector<int> to_read;  // prompt tokens, or after a move every token but the last
  std::size_t read = 0;
  std::size_t prompt_scored = 0;  // prompt positions [0, prompt_scored) whose logprobs were sent
  int next_token = -1;       // sampled, to be decoded next
  bool done = false;
};
using FailureHandler = std::function<void(std::vector<std::unique_ptr<InFlightRequest>>, const absl::Status&)>;

class Scheduler {
 public:
  Scheduler(Backend& backend, const Tokenizer& tokenizer, const SchedulerOptions& options);
  ~Scheduler();

  // INVALID_ARGUMENT for a bad request, OUT_OF_RANGE when it would attend to more tokens than the
  // device can (Backend::max_attention_span), RESOURCE_EXHAUSTED when the queue is full or the
  // request could never fit in the device's KV pool, UNAVAILABLE once the device failed.
  absl::StatusOr<uint64_t> Submit(ScheduledRequest request);
  // Takes a request from a failed device; it waits like a new one (beyond the queue bound: it
  // was already admitted once) and resumes where it stopped. Returns null when taken; gives the
  // request back when this device has failed meanwhile (checked atomically with the failure, so
  // no request is left on a failed device).
  std::unique_ptr<InFlightRequest> Adopt(std::unique_ptr<InFlightRequest> request);
  // Whether this device could ever take `request` as a moved one (and has not failed): the same
  // limits as Submit.
  bool CanAdopt(const ScheduledRequest& request) const;
  // Called (on the stepping thread) when the device fails; see above.
  void SetFailureHandler(FailureHandler handler) { on_failure_ = std::move(handler); }
  bool failed() const { return failed_.load(); }
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
    int healthy = 1;         // 0 once the device failed
    int full_length_streams = 0;  // requests of the longest length the pool holds at once
    int64_t tokens_processed = 0;  // prompt and generated tokens run on the device, cumulative
  };
  Load load() const;

 private:
  using Active = InFlightRequest;

  int WorstCasePages(const ScheduledRequest& request, bool moved) const;
  // OK, or OUT_OF_RANGE when the request would attend to more tokens than the device can.
  absl::Status CheckAttentionSpan(const ScheduledRequest& request) const;
  // Ends the requests of a step that asked more than the device can do (the device is fine).
  void FailRequests(std::span<InFlightRequest* const> requests, const absl::Status& error);
  void CountTokens(int64_t n);
  bool Cancelled(const Active& a, const std::set<uint64_t>& ids, uint64_t below) const;
  void Finish(Active& active, FinishReason reason, absl::Status error = absl::OkStatus());
  void Emit(Active& active, const TokenStream::Step& step);
  // Runs one prefill chunk of `active`; its last token's logits are left in logits_.
  absl::Status PrefillChunk(Active& active, std::size_t n);
  void RemoveFinished();
  // The device failed: hand everything to the failure handler (or end it with an error).
  void FailDevice(const absl::Status& error);

  Backend& backend_;
  const Tokenizer& tokenizer_;
  SchedulerOptions options_;

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Active>> waiting_;  // guarded by mutex_
  std::set<uint64_t> cancelled_;   // guarded by mutex_
  uint64_t cancel_below_ = 0;      // guarded by mutex_: ids below it are cancelled
  uint64_t next_id_ = 1;           // guarded by mutex_
  int running_count_ = 0;          // guarded by mutex_ (a snapshot for other threads)
  int reserved_ = 0;               // guarded by mutex_
  int pages_in_use_ = 0;           // guarded by mutex_ (a snapshot of the pool)
  int64_t tokens_processed_ = 0;   // guarded by mutex_

  std::vector<std::unique_ptr<Active>> running_;  // the stepping thread only
  std::vector<float> logits_;
  FailureHandler on_failure_;
  std::atomic<bool> failed_{false};
};

}  // namespace accllm

#include "runtime/serving/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/generate/logprobs.h"

namespace accllm {

Scheduler::Scheduler(Backend& backend, const Tokenizer& tokenizer, const SchedulerOptions& options)
    : backend_(backend), tokenizer_(tokenizer), options_(options) {
  if (options_.max_length <= 0) options_.max_length = backend.config().max_seq_len;
  options_.max_running = std::max(1, std::min(options_.max_running, backend.max_step_tokens()));
  options_.prefill_chunk = std::max(1, std::min(options_.prefill_chunk, backend.max_step_tokens()));
}

Scheduler::~Scheduler() = default;

int Scheduler::WorstCasePages(const ScheduledRequest& r, bool moved) const {
  const int64_t length = std::min<int64_t>(options_.max_length, static_cast<int64_t>(r.prompt_ids.size()) + r.options.max_new_tokens);
  // The largest chunk read at once: from the prompt, or for a moved request from its history.
  const int64_t reads = moved ? length : static_cast<int64_t>(r.prompt_ids.size());
  const int chunk = static_cast<int>(std::min<int64_t>(options_.prefill_chunk, reads));
  return SequenceKv::MaxPages(backend_.lambda(), backend_.page_tokens(), chunk, length);
}

absl::Status Scheduler::CheckAttentionSpan(const ScheduledRequest& r) const {
  const int limit = backend_.max_attention_span();
  if (limit <= 0) return absl::OkStatus();
  const int64_t length = std::min<int64_t>(options_.max_length, static_cast<int64_t>(r.prompt_ids.size()) + r.options.max_new_tokens);
  const LambdaConfig& lambda = backend_.lambda();
  const int64_t span = lambda.full() ? length : std::min<int64_t>(length, int64_t{lambda.sinks} + lambda.window);
  if (span <= limit) return absl::OkStatus();
  return absl::OutOfRangeError(absl::StrCat("the request would attend to ", span, " tokens (prompt and max_new_tokens); device ",
                                            options_.device, " attends to at most ", limit));
}

bool Scheduler::CanAdopt(const ScheduledRequest& request) const {
  return !failed_.load() && CheckAttentionSpan(request).ok() &&
         WorstCasePages(request, /*moved=*/true) <= backend_.page_pool().total();
}

absl::StatusOr<uint64_t> Scheduler::Submit(ScheduledRequest request) {
  if (failed_.load()) return absl::UnavailableError(absl::StrCat("device ", options_.device, " has failed"));
  if (absl::Status s = ValidateGenerationRequest(request.prompt_ids, request.options, backend_.config().vocab_size,
                                                 options_.max_length);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckAttentionSpan(request); !s.ok()) return s;
  auto a = std::make_unique<Active>();
  a->pages = WorstCasePages(request, /*moved=*/false);
  if (a->pages > backend_.page_pool().total()) {
    return absl::ResourceExhaustedError(absl::StrCat("the request needs up to ", a->pages, " KV pages; the device has ",
                                                     backend_.page_pool().total()));
  }
  a->to_read = request.prompt_ids;
  a->request = std::move(request);
  a->submitted = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat("the queue is full (", options_.max_waiting, " waiting)"));
  }
  a->id = next_id_++;
  const uint64_t id = a->id;
  waiting_.push_back(std::move(a));
  return id;
}

std::unique_ptr<InFlightRequest> Scheduler::Adopt(std::unique_ptr<InFlightRequest> a) {
  if (failed_.load()) return a;
  a->pages = WorstCasePages(a->request, /*moved=*/true);
  a->seq.reset();
  a->read = 0;
  a->done = false;
  if (a->stream != nullptr && !a->stream->generated().empty()) {
    // Re-read everything but the last token, which is decoded next as if nothing happened.
    const std::vector<int>& history = a->stream->history();
    a->to_read.assign(history.begin(), history.end() - 1);
    a->next_token = history.back();
  } else {
    a->to_read = a->request.prompt_ids;
    a->next_token = -1;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  // FailDevice sets failed_ and empties waiting_ under this lock: either it takes this request
  // with the others, or the request is given back here.
  if (failed_.load()) return a;
  a->id = next_id_++;
  waiting_.push_back(std::move(a));
  return nullptr;
}

bool Scheduler::HasRoomFor(const ScheduledRequest& request) const {
  if (!CheckAttentionSpan(request).ok()) return false;
  const int pages = WorstCasePages(request, /*moved=*/false);
  std::lock_guard<std::mutex> lock(mutex_);
  return !failed_.load() && waiting_.empty() && running_count_ < options_.max_running &&
         reserved_ + pages <= backend_.page_pool().total();
}

Scheduler::Load Scheduler::load() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const int full_length = SequenceKv::MaxPages(backend_.lambda(), backend_.page_tokens(), options_.prefill_chunk,
                                               options_.max_length);
  return {static_cast<int>(waiting_.size()),
          running_count_,
          options_.max_running,
          options_.max_waiting,
          reserved_,
          pages_in_use_,
          backend_.page_pool().total(),
          failed_.load() ? 0 : 1,
          std::min(options_.max_running, backend_.page_pool().total() / std::max(1, full_length)),
          tokens_processed_};
}

void Scheduler::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  cancelled_.insert(id);
}

void Scheduler::CancelAll() {
  std::lock_guard<std::mutex> lock(mutex_);
  cancel_below_ = next_id_;
}

bool Scheduler::Cancelled(const Active& a, const std::set<uint64_t>& ids, uint64_t below) const {
  return ids.contains(a.id) || a.id < below || a.request.cancel->load();
}

void Scheduler::Emit(Active& a, const TokenStream::Step& step) {
  StreamEvent event;
  event.request_id = a.id;
  event.token = step.token;
  event.text = step.text;
  event.finish = step.finish;
  event.logprobs = step.logprobs;
  event.queue_seconds = a.queue_seconds;
  event.device = options_.device;
  event.prompt_tokens = static_cast<int>(a.request.prompt_ids.size());
  event.generated_tokens = static_cast<int>(a.stream->generated().size());
  if (a.request.on_event) a.request.on_event(event);
  if (step.finish) a.done = true;
}

absl::Status Scheduler::PrefillChunk(Active& a, std::size_t n) {
  const std::size_t vocab = static_cast<std::size_t>(backend_.config().vocab_size);
  const std::span<const int> tokens = std::span(a.to_read).subspan(a.read, n);
  const std::size_t prompt = a.request.prompt_ids.size();
  // Rows of this chunk that predict a prompt token not yet scored (a moved request re-reads
  // tokens whose logprobs were already sent).
  const bool scoring = a.request.prompt_logprobs && a.read + n >= a.prompt_scored && a.prompt_scored < prompt;
  if (!scoring) {
    logits_.resize(vocab);
    return backend_.Prefill(*a.seq, tokens, logits_);
  }
  logits_.resize(n * vocab);
  RETURN_IF_ERROR(backend_.PrefillEveryLogit(*a.seq, tokens, logits_));
  StreamEvent event;
  event.request_id = a.id;
  event.device = options_.device;
  event.prompt_tokens = static_cast<int>(prompt);
  const int top_n = std::max(0, a.request.options.logprobs);
  if (a.prompt_scored == 0) {  // nothing predicts the first token
    event.prompt_logprobs.push_back({a.request.prompt_ids[0], TokenLogprobs{}});
    a.prompt_scored = 1;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t predicted = a.read + i + 1;  // the prompt position row i predicts
    if (predicted < a.prompt_scored || predicted >= prompt) continue;
    const int token = a.request.prompt_ids[predicted];
    event.prompt_logprobs.push_back({token, ComputeLogprobs(std::span(logits_).subspan(i * vocab, vocab), token, top_n)});
    a.prompt_scored = predicted + 1;
  }
  // The last row is what the step samples from.
  std::copy_n(logits_.begin() + static_cast<std::ptrdiff_t>((n - 1) * vocab), vocab, logits_.begin());
  logits_.resize(vocab);
  if (!event.prompt_logprobs.empty() && a.request.on_event) a.request.on_event(event);
  return absl::OkStatus();
}

void Scheduler::Finish(Active& a, FinishReason reason, absl::Status error) {
  StreamEvent event;
  event.request_id = a.id;
  event.finish = reason;
  event.error = std::move(error);
  event.queue_seconds = a.queue_seconds;
  event.device = options_.device;
  event.prompt_tokens = static_cast<int>(a.request.prompt_ids.size());
  event.generated_tokens = a.stream ? static_cast<int>(a.stream->generated().size()) : 0;
  if (a.request.on_event) a.request.on_event(event);
  a.done = true;
}

void Scheduler::RemoveFinished() {
  int freed = 0;
  std::erase_if(running_, [&](const std::unique_ptr<Active>& a) {
    if (!a->done) return false;
    freed += a->pages;
    return true;  // destroying the SequenceKv returns its pages
  });
  std::lock_guard<std::mutex> lock(mutex_);
  reserved_ -= freed;
  running_count_ = static_cast<int>(running_.size());
  pages_in_use_ = backend_.page_pool().used();
}

void Scheduler::FailDevice(const absl::Status& error) {
  std::vector<std::unique_ptr<Active>> moving;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    failed_.store(true);
    for (auto& a : running_) {
      if (!a->done) moving.push_back(std::move(a));
    }
    for (auto& a : waiting_) moving.push_back(std::move(a));
    running_.clear();
    waiting_.clear();
    reserved_ = 0;
    running_count_ = 0;
  }
  for (auto& a : moving) a->seq.reset();  // its pages go back to this device's pool
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pages_in_use_ = backend_.page_pool().used();
  }
  if (on_failure_) {
    on_failure_(std::move(moving), error);
    return;
  }
  for (auto& a : moving) Finish(*a, FinishReason::kError, error);
}

void Scheduler::CountTokens(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  tokens_processed_ += n;
}

void Scheduler::FailRequests(std::span<InFlightRequest* const> requests, const absl::Status& error) {
  for (InFlightRequest* a : requests) {
    if (!a->done) Finish(*a, FinishReason::kError, error);
  }
  RemoveFinished();
}

namespace {
// A request asked more than the device can do; the device itself is fine (see Backend).
bool IsRequestError(const absl::Status& s) {
  return absl::IsInvalidArgument(s) || absl::IsOutOfRange(s);
}
}  // namespace

bool Scheduler::Step() {
  if (failed_.load()) return false;
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::pair<std::unique_ptr<Active>, FinishReason>> dropped;
  std::set<uint64_t> cancelled;
  uint64_t cancel_below = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled.swap(cancelled_);
    cancel_below = cancel_below_;
    // Waiting requests that were cancelled or expired leave without running.
    std::vector<std::unique_ptr<Active>> keep;
    for (auto& p : waiting_) {
      if (Cancelled(*p, cancelled, cancel_below)) {
        dropped.emplace_back(std::move(p), FinishReason::kCancelled);
      } else if (p->request.deadline <= now) {
        dropped.emplace_back(std::move(p), FinishReason::kTimeLimit);
      } else {
        keep.push_back(std::move(p));
      }
    }
    waiting_.swap(keep);
    // Admission: best priority first, then oldest; stop at the first that does not fit, so a
    // large request is not starved by smaller ones behind it.
    std::stable_sort(waiting_.begin(), waiting_.end(), [](const auto& a, const auto& b) {
      return a->request.priority > b->request.priority;
    });
    std::size_t admitted = 0;
    while (admitted < waiting_.size() && static_cast<int>(running_.size()) < options_.max_running &&
           reserved_ + waiting_[admitted]->pages <= backend_.page_pool().total()) {
      std::unique_ptr<Active>& a = waiting_[admitted++];
      reserved_ += a->pages;
      if (a->stream == nullptr) a->queue_seconds = std::chrono::duration<double>(now - a->submitted).count();
      running_.push_back(std::move(a));
    }
    waiting_.erase(waiting_.begin(), waiting_.begin() + static_cast<std::ptrdiff_t>(admitted));
    running_count_ = static_cast<int>(running_.size());
  }
  for (auto& [a, reason] : dropped) {
    a->queue_seconds = std::chrono::duration<double>(now - a->submitted).count();
    Finish(*a, reason);
  }

  const int vocab = backend_.config().vocab_size;
  for (auto& a : running_) {
    if (!a->seq) a->seq = backend_.NewSequence();
    if (!a->stream) {
      a->stream = std::make_unique<TokenStream>(tokenizer_, a->request.prompt_ids, a->request.options, options_.max_length);
    }
    if (Cancelled(*a, cancelled, cancel_below)) {
      Finish(*a, FinishReason::kCancelled);
    } else if (a->request.deadline <= now) {
      Finish(*a, FinishReason::kTimeLimit);
    }
  }
  RemoveFinished();

  // One prefill chunk, for the oldest sequence still reading its tokens.
  Active* prefilling = nullptr;
  for (auto& a : running_) {
    if (a->read < a->to_read.size()) {
      prefilling = a.get();
      break;
    }
  }
  if (prefilling != nullptr) {
    Active& a = *prefilling;
    const std::size_t n = std::min<std::size_t>(options_.prefill_chunk, a.to_read.size() - a.read);
    const absl::Status s = PrefillChunk(a, n);
    if (!s.ok() && !IsRequestError(s)) {
      FailDevice(s);
      return false;
    }
    if (!s.ok()) {
      Active* failed[] = {&a};
      FailRequests(failed, s);  // `a` is gone
      prefilling = nullptr;
    } else {
      CountTokens(static_cast<int64_t>(n));
      a.read += n;
      // A fresh request samples its first token from the prompt's logits; a moved one already
      // holds its next token.
      if (a.read == a.to_read.size() && a.next_token < 0 && a.request.prompt_only) {
        Finish(a, FinishReason::kMaxTokens);
      } else if (a.read == a.to_read.size() && a.next_token < 0) {
        const TokenStream::Step step = a.stream->Next(logits_);
        Emit(a, step);
        a.next_token = step.token;
      }
    }
  }

  // One decode step for every sequence with a token to decode (not one that read tokens in this
  // step: its next token came from those logits, or it still has tokens to read).
  std::vector<Active*> batch;
  for (auto& a : running_) {
    if (!a->done && a->next_token >= 0 && a.get() != prefilling && a->read == a->to_read.size()) batch.push_back(a.get());
  }
  if (!batch.empty()) {
    std::vector<SequenceKv*> seqs;
    std::vector<int> tokens;
    for (Active* a : batch) {
      seqs.push_back(a->seq.get());
      tokens.push_back(a->next_token);
    }
    logits_.resize(batch.size() * static_cast<std::size_t>(vocab));
    const absl::Status s = backend_.Decode(seqs, tokens, logits_);
    if (!s.ok() && !IsRequestError(s)) {
      FailDevice(s);
      return false;
    }
    if (!s.ok()) {
      // Which sequence overstepped is not known, and the step may have written part of each.
      FailRequests(batch, s);
      batch.clear();
    }
    CountTokens(static_cast<int64_t>(batch.size()));
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Active& a = *batch[i];
      const TokenStream::Step step = a.stream->Next(std::span(logits_).subspan(i * vocab, vocab));
      Emit(a, step);
      a.next_token = step.token;
    }
  }
  RemoveFinished();
  std::lock_guard<std::mutex> lock(mutex_);
  return !running_.empty() || !waiting_.empty();
}

}  // namespace accllm

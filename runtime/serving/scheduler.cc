#include "runtime/serving/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace accllm {

struct Scheduler::Active {
  uint64_t id = 0;
  ScheduledRequest request;
  int pages = 0;
  double queue_seconds = 0;
  std::unique_ptr<SequenceKv> seq;
  std::unique_ptr<TokenStream> stream;
  std::size_t prefilled = 0;
  int next_token = -1;  // sampled, to be decoded next
  bool done = false;
};

Scheduler::Scheduler(Backend& backend, const Tokenizer& tokenizer, const SchedulerOptions& options)
    : backend_(backend), tokenizer_(tokenizer), options_(options) {
  if (options_.max_length <= 0) options_.max_length = backend.config().max_seq_len;
  options_.max_running = std::max(1, std::min(options_.max_running, backend.max_step_tokens()));
  options_.prefill_chunk = std::max(1, std::min(options_.prefill_chunk, backend.max_step_tokens()));
}

Scheduler::~Scheduler() = default;

int Scheduler::WorstCasePages(const ScheduledRequest& r) const {
  const int64_t length = std::min<int64_t>(options_.max_length, static_cast<int64_t>(r.prompt_ids.size()) + r.options.max_new_tokens);
  const int chunk = std::min<int>(options_.prefill_chunk, static_cast<int>(r.prompt_ids.size()));
  return SequenceKv::MaxPages(backend_.lambda(), backend_.page_tokens(), chunk, length);
}

absl::StatusOr<uint64_t> Scheduler::Submit(ScheduledRequest request) {
  if (absl::Status s = ValidateGenerationRequest(request.prompt_ids, request.options, backend_.config().vocab_size,
                                                 options_.max_length);
      !s.ok()) {
    return s;
  }
  const int pages = WorstCasePages(request);
  if (pages > backend_.page_pool().total()) {
    return absl::ResourceExhaustedError(absl::StrCat("the request needs up to ", pages, " KV pages; the device has ",
                                                     backend_.page_pool().total()));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat("the queue is full (", options_.max_waiting, " waiting)"));
  }
  const uint64_t id = next_id_++;
  waiting_.push_back({id, std::move(request), pages, std::chrono::steady_clock::now()});
  return id;
}

bool Scheduler::HasRoomFor(const ScheduledRequest& request) const {
  const int pages = WorstCasePages(request);
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_.empty() && running_count_ < options_.max_running &&
         reserved_ + pages <= backend_.page_pool().total();
}

Scheduler::Load Scheduler::load() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {static_cast<int>(waiting_.size()), running_count_, options_.max_running, options_.max_waiting, reserved_,
          pages_in_use_, backend_.page_pool().total()};
}

void Scheduler::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  cancelled_.insert(id);
}

void Scheduler::CancelAll() {
  std::lock_guard<std::mutex> lock(mutex_);
  cancel_below_ = next_id_;
}

int Scheduler::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(waiting_.size());
}

int Scheduler::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_count_;
}

int Scheduler::reserved_pages() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reserved_;
}

void Scheduler::Emit(Active& a, const TokenStream::Step& step) {
  StreamEvent event;
  event.request_id = a.id;
  event.token = step.token;
  event.text = step.text;
  event.finish = step.finish;
  event.logprobs = step.logprobs;
  event.queue_seconds = a.queue_seconds;
  event.prompt_tokens = static_cast<int>(a.request.prompt_ids.size());
  event.generated_tokens = static_cast<int>(a.stream->generated().size());
  if (a.request.on_event) a.request.on_event(event);
  if (step.finish) a.done = true;
}

void Scheduler::Finish(Active& a, FinishReason reason, absl::Status error) {
  StreamEvent event;
  event.request_id = a.id;
  event.finish = reason;
  event.error = std::move(error);
  event.queue_seconds = a.queue_seconds;
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

bool Scheduler::Step() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::pair<Pending, FinishReason>> dropped;
  std::set<uint64_t> cancelled;
  uint64_t cancel_below = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled.swap(cancelled_);
    cancel_below = cancel_below_;
    // Waiting requests that were cancelled or expired leave without running.
    std::vector<Pending> keep;
    for (Pending& p : waiting_) {
      if (cancelled.contains(p.id) || p.id < cancel_below) {
        dropped.emplace_back(std::move(p), FinishReason::kCancelled);
      } else if (p.request.deadline <= now) {
        dropped.emplace_back(std::move(p), FinishReason::kTimeLimit);
      } else {
        keep.push_back(std::move(p));
      }
    }
    waiting_.swap(keep);
    // Admission: best priority first, then oldest; stop at the first that does not fit, so a
    // large request is not starved by smaller ones behind it.
    std::stable_sort(waiting_.begin(), waiting_.end(),
                     [](const Pending& a, const Pending& b) { return a.request.priority > b.request.priority; });
    std::size_t admitted = 0;
    while (admitted < waiting_.size() && static_cast<int>(running_.size()) < options_.max_running &&
           reserved_ + waiting_[admitted].pages <= backend_.page_pool().total()) {
      Pending& p = waiting_[admitted++];
      reserved_ += p.pages;
      auto a = std::make_unique<Active>();
      a->id = p.id;
      a->pages = p.pages;
      a->queue_seconds = std::chrono::duration<double>(now - p.submitted).count();
      a->request = std::move(p.request);
      running_.push_back(std::move(a));
    }
    waiting_.erase(waiting_.begin(), waiting_.begin() + static_cast<std::ptrdiff_t>(admitted));
    running_count_ = static_cast<int>(running_.size());
  }
  for (auto& [p, reason] : dropped) {
    Active gone;
    gone.id = p.id;
    gone.queue_seconds = std::chrono::duration<double>(now - p.submitted).count();
    gone.request = std::move(p.request);
    Finish(gone, reason);
  }

  const int vocab = backend_.config().vocab_size;
  for (auto& a : running_) {
    if (!a->seq) {
      a->seq = backend_.NewSequence();
      a->stream = std::make_unique<TokenStream>(tokenizer_, a->request.prompt_ids, a->request.options, options_.max_length);
    }
    if (cancelled.contains(a->id) || a->id < cancel_below) {
      Finish(*a, FinishReason::kCancelled);
    } else if (a->request.deadline <= now) {
      Finish(*a, FinishReason::kTimeLimit);
    }
  }
  RemoveFinished();

  // One prefill chunk, for the oldest sequence still reading its prompt.
  Active* prefilling = nullptr;
  for (auto& a : running_) {
    if (a->prefilled < a->request.prompt_ids.size()) {
      prefilling = a.get();
      break;
    }
  }
  if (prefilling != nullptr) {
    Active& a = *prefilling;
    const std::size_t n = std::min<std::size_t>(options_.prefill_chunk, a.request.prompt_ids.size() - a.prefilled);
    logits_.resize(static_cast<std::size_t>(vocab));
    const absl::Status s = backend_.Prefill(*a.seq, std::span(a.request.prompt_ids).subspan(a.prefilled, n), logits_);
    if (!s.ok()) {
      Finish(a, FinishReason::kError, s);
    } else {
      a.prefilled += n;
      if (a.prefilled == a.request.prompt_ids.size()) {
        const TokenStream::Step step = a.stream->Next(logits_);
        Emit(a, step);
        a.next_token = step.token;
      }
    }
  }

  // One decode step for every sequence with a token to decode (not the one that just finished
  // its prompt: its first token was sampled from the prefill's logits).
  std::vector<Active*> batch;
  for (auto& a : running_) {
    if (!a->done && a->next_token >= 0 && a.get() != prefilling) batch.push_back(a.get());
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
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Active& a = *batch[i];
      if (!s.ok()) {
        Finish(a, FinishReason::kError, s);
        continue;
      }
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

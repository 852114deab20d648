// Continuous batching: the same tokens as one-at-a-time generation, admission by worst-case
// pages, priorities, a bounded queue, cancellation and deadlines, and every page returned.
#include "runtime/serving/scheduler.h"

#include <atomic>
#include <map>
#include <thread>

#include "gmock/gmock.h"
#include "runtime/cpu/cpu_engine.h"
#include "runtime/generate/generator.h"
#include "runtime/generate/logprobs.h"
#include "runtime/model/load_model.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::RequireModelFile;
using ::testing::HasSubstr;

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(model_, LoadModel(RequireModelFile("stories260K.bin").string()));
    ASSERT_OK_AND_ASSIGN(tokenizer_, LoadTokenizer(RequireModelFile("tok512.bin").string()));
  }

  std::unique_ptr<CpuEngine> Engine(int pages) {
    CpuEngineOptions options;
    options.kv_precision = KvPrecision::kF32;
    options.lambda = {4, 64};
    options.kv_pages = pages;
    options.max_step_tokens = 64;
    auto engine = CpuEngine::Create(EngineWeightsFromModel(*model_), options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return std::move(*engine);
  }

  ScheduledRequest Greedy(const std::string& prompt, int n, std::vector<StreamEvent>* events) {
    ScheduledRequest r;
    r.prompt_ids = *tokenizer_->Encode(prompt, true);
    r.options.sampling.temperature = 0.0f;
    r.options.max_new_tokens = n;
    r.on_event = [events](const StreamEvent& e) { events->push_back(e); };
    return r;
  }

  static std::vector<int> Tokens(const std::vector<StreamEvent>& events) {
    std::vector<int> out;
    for (const auto& e : events) {
      if (e.token >= 0) out.push_back(e.token);
    }
    return out;
  }

  static void RunToEnd(Scheduler& s) {
    for (int i = 0; i < 10000 && s.Step(); ++i) {
    }
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(SchedulerTest, ConcurrentStreamsGetTheTokensOfOneAtATimeGeneration) {
  auto engine = Engine(64);
  const std::vector<std::string> prompts = {"Once upon a time", "Lily and Ben were", "The cat", "One day, a little"};
  std::vector<std::vector<int>> expected;
  {
    auto generator = Generator::Create(*engine, *tokenizer_);
    ASSERT_TRUE(generator.ok());
    for (const auto& p : prompts) {
      GenerationOptions o;
      o.sampling.temperature = 0.0f;
      o.max_new_tokens = 40;
      ASSERT_OK_AND_ASSIGN(GenerationResult r, (*generator)->Generate(p, o));
      expected.push_back(r.generated_ids);
    }
  }
  Scheduler scheduler(*engine, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 3});
  std::vector<std::vector<StreamEvent>> events(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i) ASSERT_OK(scheduler.Submit(Greedy(prompts[i], 40, &events[i])).status());
  RunToEnd(scheduler);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(Tokens(events[i]), expected[i]) << prompts[i];
    ASSERT_FALSE(events[i].empty());
    EXPECT_EQ(events[i].back().finish, FinishReason::kMaxTokens);
    EXPECT_EQ(events[i].back().generated_tokens, 40);
  }
  EXPECT_EQ(engine->page_pool().used(), 0);
  EXPECT_EQ(scheduler.load().reserved_pages, 0);
}

TEST_F(SchedulerTest, AdmitsOnlyWhatFitsAndNeverRunsOutOfPages) {
  // Each request may need ceil(4/16) + ceil((64 + 2)/16) + 1 = 7 pages: a pool of 10 runs one
  // at a time, and the backend is never asked for a page it does not have.
  auto engine = Engine(10);
  Scheduler scheduler(*engine, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 3});
  std::vector<std::vector<StreamEvent>> events(3);
  for (int i = 0; i < 3; ++i) ASSERT_OK(scheduler.Submit(Greedy("Once upon a time", 100, &events[i])).status());
  int max_running = 0;
  while (scheduler.Step()) max_running = std::max(max_running, scheduler.load().running);
  EXPECT_EQ(max_running, 1);
  for (const auto& e : events) {
    ASSERT_FALSE(e.empty());
    EXPECT_EQ(e.back().finish, FinishReason::kMaxTokens) << e.back().error;
    EXPECT_EQ(Tokens(e), Tokens(events[0]));
  }
  EXPECT_EQ(engine->page_pool().used(), 0);
}

TEST_F(SchedulerTest, HigherPriorityRunsFirst) {
  auto engine = Engine(64);
  Scheduler scheduler(*engine, *tokenizer_, {.max_running = 1, .max_waiting = 8});
  std::vector<uint64_t> finished;
  const auto request = [&](int priority) {
    ScheduledRequest r;
    r.prompt_ids = {1, 403};
    r.options.max_new_tokens = 5;
    r.priority = priority;
    r.on_event = [&finished](const StreamEvent& e) {
      if (e.finish) finished.push_back(e.request_id);
    };
    return r;
  };
  ASSERT_OK_AND_ASSIGN(uint64_t low, scheduler.Submit(request(0)));
  ASSERT_OK_AND_ASSIGN(uint64_t high, scheduler.Submit(request(5)));
  RunToEnd(scheduler);
  EXPECT_EQ(finished, (std::vector<uint64_t>{high, low}));
}

TEST_F(SchedulerTest, RefusesBadRequestsAndAFullQueue) {
  auto engine = Engine(16);
  Scheduler scheduler(*engine, *tokenizer_, {.max_running = 1, .max_waiting = 2});
  std::vector<StreamEvent> ignored;
  ASSERT_OK(scheduler.Submit(Greedy("a", 5, &ignored)).status());
  ASSERT_OK(scheduler.Submit(Greedy("b", 5, &ignored)).status());
  const auto full = scheduler.Submit(Greedy("c", 5, &ignored));
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.status().message()), HasSubstr("queue is full"));

  ScheduledRequest bad = Greedy("d", 5, &ignored);
  bad.options.sampling.top_p = 7.0f;
  EXPECT_EQ(scheduler.Submit(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = Greedy("d", 0, &ignored);
  EXPECT_EQ(scheduler.Submit(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = Greedy("d", 5, &ignored);
  bad.prompt_ids.push_back(100000);
  EXPECT_EQ(scheduler.Submit(bad).status().code(), absl::StatusCode::kInvalidArgument);
  RunToEnd(scheduler);
  EXPECT_EQ(engine->page_pool().used(), 0);
}

TEST_F(SchedulerTest, CancelDuringPrefillAndDecodeAndDeadlines) {
  auto engine = Engine(64);
  Scheduler scheduler(*engine, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 2});
  std::vector<StreamEvent> prefilling, decoding, expired, waiting;
  ASSERT_OK_AND_ASSIGN(uint64_t b, scheduler.Submit(Greedy("Hi", 50, &decoding)));
  for (int i = 0; i < 3; ++i) scheduler.Step();
  ASSERT_FALSE(Tokens(decoding).empty()) << "decoding by now";
  // A long prompt read 2 tokens per step: still prefilling a few steps later.
  ScheduledRequest long_prompt = Greedy("Once upon a time, there was a little girl named Lily. She loved", 50, &prefilling);
  ASSERT_OK_AND_ASSIGN(uint64_t a, scheduler.Submit(long_prompt));
  ScheduledRequest late = Greedy("Lily", 50, &expired);
  late.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
  ASSERT_OK(scheduler.Submit(late).status());
  for (int i = 0; i < 3; ++i) scheduler.Step();
  EXPECT_TRUE(prefilling.empty()) << "still reading its prompt";
  scheduler.Cancel(a);
  scheduler.Cancel(b);
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  RunToEnd(scheduler);
  ASSERT_FALSE(prefilling.empty());
  EXPECT_EQ(prefilling.back().finish, FinishReason::kCancelled);
  EXPECT_EQ(decoding.back().finish, FinishReason::kCancelled);
  EXPECT_LT(decoding.back().generated_tokens, 50);
  EXPECT_EQ(expired.back().finish, FinishReason::kTimeLimit);
  EXPECT_EQ(engine->page_pool().used(), 0);
  EXPECT_EQ(scheduler.load().reserved_pages, 0);
}

TEST_F(SchedulerTest, SubmitAndCancelFromOtherThreadsWhileStepping) {
  auto engine = Engine(64);
  Scheduler scheduler(*engine, *tokenizer_, {.max_running = 8, .max_waiting = 64, .prefill_chunk = 8});
  std::atomic<bool> stop{false};
  std::atomic<int> finished{0};
  std::thread worker([&] {
    while (!stop.load()) {
      if (!scheduler.Step()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::vector<uint64_t> ids;
  for (int i = 0; i < 24; ++i) {
    ScheduledRequest r;
    r.prompt_ids = {1, 403, 407, static_cast<int>(261 + i)};
    r.options.max_new_tokens = 20 + i;
    r.options.sampling.seed = i;
    r.on_event = [&finished](const StreamEvent& e) {
      if (e.finish) finished.fetch_add(1);
    };
    ASSERT_OK_AND_ASSIGN(uint64_t id, scheduler.Submit(std::move(r)));
    ids.push_back(id);
    if (i % 3 == 0) scheduler.Cancel(ids[i / 2]);
  }
  for (int i = 0; i < 20000 && finished.load() < 24; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop.store(true);
  worker.join();
  EXPECT_EQ(finished.load(), 24);
  EXPECT_EQ(engine->page_pool().used(), 0);
}

// A backend that fails after `steps` calls (fault injection around a real engine): by default
// like a faulted device; with another code, like a device asked more than it can do. It may also
// report an attention span limit.
class FailsAfter final : public Backend {
 public:
  FailsAfter(Backend& inner, int steps, absl::StatusCode code = absl::StatusCode::kInternal, int max_span = 0)
      : inner_(inner), left_(steps), code_(code), max_span_(max_span) {}
  int max_attention_span() const override { return max_span_; }
  std::string name() const override { return "failing"; }
  const LlamaConfig& config() const override { return inner_.config(); }
  const LambdaConfig& lambda() const override { return inner_.lambda(); }
  int page_tokens() const override { return inner_.page_tokens(); }
  PagePool& page_pool() override { return inner_.page_pool(); }
  int max_step_tokens() const override { return inner_.max_step_tokens(); }
  absl::Status Prefill(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) override {
    return left_-- > 0 ? inner_.Prefill(seq, tokens, logits) : absl::Status(code_, "device fault");
  }
  absl::Status Decode(std::span<SequenceKv* const> seqs, std::span<const int> tokens, std::span<float> logits) override {
    return left_-- > 0 ? inner_.Decode(seqs, tokens, logits) : absl::Status(code_, "device fault");
  }
  void Heal() { left_ = 1 << 30; }

 private:
  Backend& inner_;
  int left_;
  absl::StatusCode code_;
  int max_span_;
};

// A step that asks more than the device can do (OUT_OF_RANGE, INVALID_ARGUMENT) ends the
// requests of that step with an error; the device stays in service and serves the next request.
TEST_F(SchedulerTest, ARequestsProblemIsNotADeviceFailure) {
  for (absl::StatusCode code : {absl::StatusCode::kOutOfRange, absl::StatusCode::kInvalidArgument}) {
    auto engine = Engine(64);
    FailsAfter limited(*engine, 3, code);
    Scheduler s(limited, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 64, .device = "limited"});
    bool handed_over = false;
    s.SetFailureHandler([&](std::vector<std::unique_ptr<InFlightRequest>>, const absl::Status&) { handed_over = true; });
    std::vector<StreamEvent> a, b, c;
    ASSERT_OK(s.Submit(Greedy("Once upon a time", 20, &a)).status());
    ASSERT_OK(s.Submit(Greedy("The cat", 20, &b)).status());
    RunToEnd(s);
    EXPECT_FALSE(s.failed());
    EXPECT_FALSE(handed_over);
    for (const auto* events : {&a, &b}) {
      ASSERT_FALSE(events->empty());
      EXPECT_EQ(events->back().finish, FinishReason::kError);
      EXPECT_THAT(std::string(events->back().error.message()), HasSubstr("device fault"));
    }
    EXPECT_EQ(engine->page_pool().used(), 0);
    limited.Heal();
    ASSERT_OK(s.Submit(Greedy("Lily", 5, &c)).status());
    RunToEnd(s);
    ASSERT_FALSE(c.empty());
    EXPECT_EQ(c.back().finish, FinishReason::kMaxTokens);
    EXPECT_EQ(s.load().healthy, 1);
  }
}

// A device with an attention span limit refuses, at admission, requests whose attention would
// exceed it (OUT_OF_RANGE), and CanAdopt and HasRoomFor say no to them too.
TEST_F(SchedulerTest, AdmissionChecksTheDevicesAttentionSpan) {
  auto engine = Engine(64);  // Λ: 4 sinks + a window of 64
  FailsAfter span80(*engine, 1 << 30, absl::StatusCode::kInternal, /*max_span=*/80);
  FailsAfter span40(*engine, 1 << 30, absl::StatusCode::kInternal, /*max_span=*/40);
  Scheduler wide(span80, *tokenizer_, {.max_running = 4, .max_waiting = 8, .device = "wide"});
  Scheduler narrow(span40, *tokenizer_, {.max_running = 4, .max_waiting = 8, .device = "narrow"});
  std::vector<StreamEvent> events;
  ScheduledRequest r = Greedy("Once upon a time", 100, &events);  // sees 4 + 64 tokens at most
  EXPECT_TRUE(wide.HasRoomFor(r));
  EXPECT_TRUE(wide.CanAdopt(r));
  EXPECT_FALSE(narrow.HasRoomFor(r));
  EXPECT_FALSE(narrow.CanAdopt(r));
  absl::StatusOr<uint64_t> refused = narrow.Submit(r);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("attends to at most 40"));
  r.options.max_new_tokens = 20;  // a short request sees fewer tokens than the window
  ASSERT_OK(narrow.Submit(r).status());
  RunToEnd(narrow);
}

// Adoption and failure are atomic: a device that has failed gives a moved request back (the
// pool then tries the next device) instead of holding it where nothing will ever step it.
TEST_F(SchedulerTest, AFailedDeviceGivesAnAdoptedRequestBack) {
  auto engine = Engine(64), other_engine = Engine(64);
  FailsAfter failing(*engine, 0);
  Scheduler s(failing, *tokenizer_, {.max_running = 4, .max_waiting = 8, .device = "failing"});
  std::vector<std::unique_ptr<InFlightRequest>> handed;
  s.SetFailureHandler([&](std::vector<std::unique_ptr<InFlightRequest>> moving, const absl::Status&) {
    for (auto& r : moving) handed.push_back(std::move(r));
  });
  std::vector<StreamEvent> events;
  ASSERT_OK(s.Submit(Greedy("Once upon a time", 5, &events)).status());
  RunToEnd(s);
  ASSERT_TRUE(s.failed());
  ASSERT_EQ(handed.size(), 1u);
  std::unique_ptr<InFlightRequest> back = s.Adopt(std::move(handed[0]));
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(s.load().waiting, 0);
  Scheduler other(*other_engine, *tokenizer_, {.max_running = 4, .max_waiting = 8, .device = "other"});
  EXPECT_EQ(other.Adopt(std::move(back)), nullptr);
  RunToEnd(other);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().finish, FinishReason::kMaxTokens);
  EXPECT_EQ(events.back().device, "other");
}

// Streams of a device that fails are adopted by another and go on: the same tokens and text as
// an uninterrupted run (sampling with a seed, so the sampler's state moves too), nothing twice.
TEST_F(SchedulerTest, StreamsOfAFailedDeviceGoOnWhereTheyStopped) {
  auto first_engine = Engine(64), second_engine = Engine(64), reference_engine = Engine(64);
  FailsAfter failing(*first_engine, 25);
  Scheduler second(*second_engine, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 4, .device = "second"});
  Scheduler first(failing, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 4, .device = "first"});
  absl::Status seen;
  first.SetFailureHandler([&](std::vector<std::unique_ptr<InFlightRequest>> moving, const absl::Status& error) {
    seen = error;
    for (auto& r : moving) ASSERT_EQ(second.Adopt(std::move(r)), nullptr);
  });
  Scheduler reference(*reference_engine, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 4});

  const std::vector<std::string> prompts = {"Once upon a time", "Lily and Ben were", "The cat"};
  std::vector<std::vector<StreamEvent>> moved(prompts.size()), expected(prompts.size());
  const auto request = [&](std::size_t i, std::vector<StreamEvent>* events) {
    ScheduledRequest r;
    r.prompt_ids = *tokenizer_->Encode(prompts[i], true);
    r.options.sampling.temperature = 0.8f;
    r.options.sampling.seed = 7 + i;
    r.options.max_new_tokens = 30;
    r.options.ignore_eos = true;
    r.on_event = [events](const StreamEvent& e) { events->push_back(e); };
    return r;
  };
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_OK(first.Submit(request(i, &moved[i])).status());
    ASSERT_OK(reference.Submit(request(i, &expected[i])).status());  // the same batch, never failing
  }
  for (int i = 0; i < 1000 && (first.Step() || second.Step()); ++i) {
  }
  RunToEnd(second);
  RunToEnd(reference);
  EXPECT_TRUE(first.failed());
  EXPECT_THAT(std::string(seen.message()), HasSubstr("device fault"));
  EXPECT_EQ(first.Submit(request(0, &moved[0])).status().code(), absl::StatusCode::kUnavailable);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(Tokens(moved[i]), Tokens(expected[i])) << prompts[i];
    std::string a, b;
    for (const auto& e : moved[i]) a += e.text;
    for (const auto& e : expected[i]) b += e.text;
    EXPECT_EQ(a, b);
    ASSERT_FALSE(moved[i].empty());
    EXPECT_EQ(moved[i].back().finish, FinishReason::kMaxTokens);
    // It really moved mid-stream: tokens from both devices.
    EXPECT_EQ(moved[i].front().device, "first") << prompts[i];
    EXPECT_EQ(moved[i].back().device, "second") << prompts[i];
  }
  EXPECT_EQ(first_engine->page_pool().used(), 0);
  EXPECT_EQ(second_engine->page_pool().used(), 0);
}

// Prompt logprobs (what evaluation harnesses score a served model with): every prompt token
// once, in order (the first with nothing predicting it), equal to the log-softmax of the logits that predict it; with
// prompt_only nothing is sampled.
class PromptLogprobsTest : public SchedulerTest {
 protected:
  // What the logits after prompt[0..i) say of prompt[i], for every i >= 1, after the first token.
  std::vector<PromptTokenLogprob> Expected(const std::vector<int>& prompt, int top_n) {
    std::vector<PromptTokenLogprob> out;
    auto engine = Engine(64);
    std::vector<float> logits(static_cast<std::size_t>(engine->config().vocab_size));
    out.push_back({prompt[0], TokenLogprobs{}});
    for (std::size_t i = 1; i < prompt.size(); ++i) {
      auto seq = engine->NewSequence();
      EXPECT_TRUE(engine->Prefill(*seq, std::span(prompt).first(i), logits).ok());
      out.push_back({prompt[i], ComputeLogprobs(logits, prompt[i], top_n)});
    }
    return out;
  }
  static std::vector<PromptTokenLogprob> Scored(const std::vector<StreamEvent>& events) {
    std::vector<PromptTokenLogprob> out;
    for (const auto& e : events) out.insert(out.end(), e.prompt_logprobs.begin(), e.prompt_logprobs.end());
    return out;
  }
  static void ExpectSame(const std::vector<PromptTokenLogprob>& got, const std::vector<PromptTokenLogprob>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].token, want[i].token) << i;
      EXPECT_NEAR(got[i].logprobs.logprob, want[i].logprobs.logprob, 1e-4) << i;
      ASSERT_EQ(got[i].logprobs.top.size(), want[i].logprobs.top.size()) << i;
      for (std::size_t k = 0; k < got[i].logprobs.top.size(); ++k) {
        EXPECT_EQ(got[i].logprobs.top[k].token, want[i].logprobs.top[k].token) << i << " " << k;
      }
    }
  }
};

TEST_F(PromptLogprobsTest, PromptOnlyScoresEveryTokenAndSamplesNothing) {
  auto engine = Engine(64);
  Scheduler scheduler(*engine, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 3});
  std::vector<StreamEvent> events;
  ScheduledRequest r = Greedy("Once upon a time there was a little girl named Lily", 5, &events);
  const std::vector<int> prompt = r.prompt_ids;
  r.prompt_logprobs = true;
  r.prompt_only = true;
  r.options.logprobs = 3;
  ASSERT_OK(scheduler.Submit(std::move(r)).status());
  RunToEnd(scheduler);
  ExpectSame(Scored(events), Expected(prompt, 3));
  EXPECT_TRUE(Tokens(events).empty());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().finish, FinishReason::kMaxTokens);
  EXPECT_EQ(events.back().generated_tokens, 0);
  EXPECT_EQ(engine->page_pool().used(), 0);
}

TEST_F(PromptLogprobsTest, WithGenerationTheTokensAreThoseOfAPlainRequest) {
  auto engine = Engine(64);
  Scheduler scheduler(*engine, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 4});
  std::vector<StreamEvent> plain, scored;
  ASSERT_OK(scheduler.Submit(Greedy("Lily and Ben were", 20, &plain)).status());
  ScheduledRequest r = Greedy("Lily and Ben were", 20, &scored);
  const std::vector<int> prompt = r.prompt_ids;
  r.prompt_logprobs = true;
  ASSERT_OK(scheduler.Submit(std::move(r)).status());
  RunToEnd(scheduler);
  EXPECT_EQ(Tokens(scored), Tokens(plain));
  ExpectSame(Scored(scored), Expected(prompt, 0));
  // Every prompt logprob arrives before the first generated token.
  bool token_seen = false;
  for (const auto& e : scored) {
    if (e.token >= 0) token_seen = true;
    if (!e.prompt_logprobs.empty()) {
      EXPECT_FALSE(token_seen);
    }
  }
}

TEST_F(PromptLogprobsTest, ARequestMovedMidPromptScoresEachTokenOnce) {
  auto first_engine = Engine(64), second_engine = Engine(64);
  FailsAfter failing(*first_engine, 6);  // one token per Prefill call here: fails in the 2nd chunk
  Scheduler second(*second_engine, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 4, .device = "second"});
  Scheduler first(failing, *tokenizer_, {.max_running = 4, .max_waiting = 8, .prefill_chunk = 4, .device = "first"});
  first.SetFailureHandler([&](std::vector<std::unique_ptr<InFlightRequest>> moving, const absl::Status&) {
    for (auto& r : moving) ASSERT_EQ(second.Adopt(std::move(r)), nullptr);
  });
  std::vector<StreamEvent> events;
  ScheduledRequest r = Greedy("Once upon a time there was a little girl named Lily", 10, &events);
  const std::vector<int> prompt = r.prompt_ids;
  r.prompt_logprobs = true;
  r.options.logprobs = 2;
  ASSERT_OK(first.Submit(std::move(r)).status());
  for (int i = 0; i < 1000 && (first.Step() || second.Step()); ++i) {
  }
  RunToEnd(second);
  ASSERT_TRUE(first.failed());
  ExpectSame(Scored(events), Expected(prompt, 2));
  EXPECT_EQ(events.front().device, "first");
  EXPECT_EQ(events.back().device, "second");
  EXPECT_EQ(Tokens(events).size(), 10u);
  EXPECT_EQ(second_engine->page_pool().used(), 0);
}

}  // namespace
}  // namespace accllm

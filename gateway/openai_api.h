// OpenAI's HTTP API as data: requests parsed and checked into the daemon's GenerateRequests, and
// the responses, stream chunks and errors written in OpenAI's shapes. No I/O here.
#pragma once

#include <optional>
#include <variant>
#include <string>
#include <vector>

#include "accllm/v1/generation.pb.h"
#include "gateway/chat_template.h"
#include "nlohmann/json.hpp"

namespace accllm::gateway {

// An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
  nlohmann::json ToJson() const;
};
ApiError InvalidRequest(std::string message, std::string param = {});

enum class Endpoint { kCompletions, kChat };

// One choice of a response: one call to a daemon.
struct ChoiceCall {
  accllm::v1::GenerateRequest request;
  int index = 0;         // the choice's index in the response
  int prompt_index = 0;  // completions with several prompts: which one
};

struct ApiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;                     // completions: the prompt goes before the text
  int logprobs = -1;                     // -1: none; else the number of alternatives per token
  std::vector<std::string> echo_prompts;  // per prompt index: its text, when given as text
  std::vector<ChoiceCall> calls;         // prompts × n
};

struct ParseContext {
  ChatTemplate chat_template = ChatTemplate::kPlain;
  std::string request_id;  // the response id; also sent to the daemons
};

// Checks a request body's fields (unknown ones are ignored) and builds the daemon calls.
// `body` is the whole request body (invalid JSON is an error).
std::variant<ApiRequest, ApiError> ParseApiRequest(Endpoint endpoint, const std::string& body,
                                                  const ParseContext& context);

// What one choice has produced so far, from the daemon's stream.
struct ChoiceResult {
  std::string text;
  std::vector<accllm::v1::TokenLogprobs> prompt_logprobs;  // from the prompt's 2nd token on
  std::vector<accllm::v1::TokenLogprobs> logprobs;         // per generated token
  std::string finish_reason;                               // "stop" or "length" once done
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

// "stop", "length", or empty for a finish that is not a normal end (cancel, error).
std::string OpenAiFinishReason(accllm::v1::FinishReason reason);

// Response bodies. `created` is seconds since the epoch.
struct ResponseMeta {
  std::string id;
  std::string model;
  int64_t created = 0;
};
nlohmann::json CompletionResponse(const ApiRequest& request, const ResponseMeta& meta,
                                  const std::vector<ChoiceResult>& choices);

// One stream chunk for choice `index`: `text` (with its tokens' logprobs), and `finish_reason`
// when the choice ended. For chat, `first` makes the delta carry the role.
nlohmann::json CompletionChunk(const ApiRequest& request, const ResponseMeta& meta, int index, const std::string& text,
                               const std::vector<accllm::v1::TokenLogprobs>& prompt_logprobs,
                               const std::vector<accllm::v1::TokenLogprobs>& logprobs, int text_offset,
                               const std::string& finish_reason, bool first);
// The usage chunk (empty choices) sent before [DONE] when stream_options.include_usage.
nlohmann::json UsageChunk(const ApiRequest& request, const ResponseMeta& meta, int prompt_tokens, int completion_tokens);

// A token's bytes as OpenAI writes a token: the text when it is valid UTF-8, else
// "bytes:\xNN…" as the legacy completions API does.
std::string TokenText(const std::string& bytes);

}  // namespace accllm::gateway

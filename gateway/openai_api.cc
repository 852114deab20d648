#include "gateway/openai_api.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace accllm::gateway {
namespace {

using nlohmann::json;

constexpr int kMaxChoices = 128;
constexpr int kMaxStops = 16;  // the daemon's bound (OpenAI's own is 4)
constexpr int kMaxCompletionLogprobs = 5;
constexpr int kMaxChatTopLogprobs = 20;

bool IsValidUtf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
    if (extra < 0 || i + static_cast<std::size_t>(extra) >= s.size() + (extra == 0 ? 1 : 0)) return false;
    for (int k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]) >> 6) != 0x2) return false;
    }
    i += static_cast<std::size_t>(extra) + 1;
  }
  return true;
}

// Reads the fields of one request object, remembering the first problem.
class Fields {
 public:
  explicit Fields(const json& object) : object_(object) {}

  const json* Get(const char* name) const {
    const auto it = object_.find(name);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  bool Failed() const { return error_.has_value(); }
  ApiError TakeError() { return *std::move(error_); }
  void Fail(std::string message, std::string param) {
    if (!error_) error_ = InvalidRequest(std::move(message), std::move(param));
  }

  std::optional<bool> Bool(const char* name) {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) return Fail(absl::StrCat(name, " must be a boolean"), name), std::nullopt;
    return v->get<bool>();
  }
  std::optional<double> Number(const char* name, double lo, double hi) {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) return Fail(absl::StrCat(name, " must be a number"), name), std::nullopt;
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi)) {
      return Fail(absl::StrFormat("%s must be between %g and %g, got %g", name, lo, hi, x), name), std::nullopt;
    }
    return x;
  }
  std::optional<int64_t> Integer(const char* name, int64_t lo, int64_t hi) {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number() || (v->is_number_float() && std::floor(v->get<double>()) != v->get<double>())) {
      return Fail(absl::StrCat(name, " must be an integer"), name), std::nullopt;
    }
    const double x = v->is_number_unsigned() ? static_cast<double>(v->get<uint64_t>()) : v->get<double>();
    if (x < static_cast<double>(lo) || x > static_cast<double>(hi)) {
      return Fail(absl::StrCat(name, " must be between ", lo, " and ", hi, ", got ", v->dump()), name), std::nullopt;
    }
    return v->is_number_unsigned() ? static_cast<int64_t>(v->get<uint64_t>()) : v->get<int64_t>();
  }
  std::optional<std::string> String(const char* name) {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return Fail(absl::StrCat(name, " must be a string"), name), std::nullopt;
    return v->get<std::string>();
  }
  // A field this server does not implement: allowed only at its neutral value.
  void Unsupported(const char* name, const json& neutral, const char* instead) {
    const json* v = Get(name);
    if (v != nullptr && *v != neutral && !(v->is_object() && v->empty()) && !(v->is_array() && v->empty())) {
      Fail(absl::StrCat(name, " is not supported by this server", instead), name);
    }
  }

 private:
  const json& object_;
  std::optional<ApiError> error_;
};

// "stop": a string or a list of strings.
std::vector<std::string> ParseStop(Fields& f) {
  std::vector<std::string> out;
  const json* v = f.Get("stop");
  if (v == nullptr) return out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const json& s : *v) {
      if (!s.is_string()) return f.Fail("stop must be a string or a list of strings", "stop"), out;
      out.push_back(s.get<std::string>());
    }
  } else {
    f.Fail("stop must be a string or a list of strings", "stop");
  }
  if (static_cast<int>(out.size()) > kMaxStops) f.Fail(absl::StrCat("stop holds at most ", kMaxStops, " strings"), "stop");
  for (const std::string& s : out) {
    if (s.empty()) f.Fail("stop strings must not be empty", "stop");
  }
  return out;
}

// A completions prompt: a string, a list of strings, a list of token ids, or a list of lists.
struct Prompt {
  std::optional<std::string> text;
  std::vector<int> ids;
};
std::vector<Prompt> ParsePrompts(Fields& f) {
  std::vector<Prompt> out;
  const json* v = f.Get("prompt");
  const char* kShape = "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids";
  if (v == nullptr) return f.Fail("prompt is required", "prompt"), out;
  auto ids_of = [&](const json& list, Prompt& p) {
    for (const json& id : list) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return f.Fail("token ids must be non-negative integers", "prompt");
      }
      p.ids.push_back(id.get<int>());
    }
    if (p.ids.empty()) f.Fail("a prompt of token ids must not be empty", "prompt");
  };
  if (v->is_string()) {
    out.push_back({v->get<std::string>(), {}});
  } else if (v->is_array() && !v->empty() && (*v)[0].is_number()) {
    Prompt p;
    ids_of(*v, p);
    out.push_back(std::move(p));
  } else if (v->is_array() && !v->empty()) {
    for (const json& item : *v) {
      Prompt p;
      if (item.is_string()) {
        p.text = item.get<std::string>();
      } else if (item.is_array()) {
        ids_of(item, p);
      } else {
        return f.Fail(kShape, "prompt"), out;
      }
      out.push_back(std::move(p));
    }
  } else {
    f.Fail(kShape, "prompt");
  }
  return out;
}

std::vector<ChatMessage> ParseMessages(Fields& f) {
  std::vector<ChatMessage> out;
  const json* v = f.Get("messages");
  if (v == nullptr) return f.Fail("messages is required", "messages"), out;
  if (!v->is_array() || v->empty()) return f.Fail("messages must be a non-empty list", "messages"), out;
  for (std::size_t i = 0; i < v->size(); ++i) {
    const json& m = (*v)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return f.Fail(absl::StrCat(param, " must be an object"), param), out;
    ChatMessage message;
    const auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return f.Fail(absl::StrCat(param, ".role must be a string"), param + ".role"), out;
    message.role = role->get<std::string>();
    if (message.role == "developer") message.role = "system";  // OpenAI's newer name for it
    const auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (message.role != "assistant") return f.Fail(absl::StrCat(param, ".content is required"), param + ".content"), out;
    } else if (content->is_string()) {
      message.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
          return f.Fail(absl::StrCat(param, ".content: only text parts ({\"type\": \"text\", \"text\": …}) are supported"),
                        param + ".content"),
                 out;
        }
        message.content += part["text"].get<std::string>();
      }
    } else {
      return f.Fail(absl::StrCat(param, ".content must be a string or a list of text parts"), param + ".content"), out;
    }
    out.push_back(std::move(message));
  }
  return out;
}

json TopLogprobsObject(const accllm::v1::TokenLogprobs& lp) {
  json top = json::object();
  for (const auto& alt : lp.top()) top[TokenText(alt.token())] = alt.logprob();
  return top;
}

json BytesOf(const std::string& s) {
  json out = json::array();
  for (unsigned char c : s) out.push_back(static_cast<int>(c));
  return out;
}

json ChatLogprobEntry(const accllm::v1::TokenLogprob& t) {
  return {{"token", TokenText(t.token())}, {"logprob", t.logprob()}, {"bytes", BytesOf(t.token())}};
}

// The legacy completions logprobs object for `prompt` (echoed; the first token has none) then
// `generated` tokens, text offsets counted from `offset`.
json CompletionLogprobs(const std::vector<accllm::v1::TokenLogprobs>* prompt, bool prompt_has_first,
                        const std::vector<accllm::v1::TokenLogprobs>& generated, int offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  auto add = [&](const accllm::v1::TokenLogprobs& lp, bool scored) {
    tokens.push_back(TokenText(lp.sampled().token()));
    token_logprobs.push_back(scored ? json(lp.sampled().logprob()) : json(nullptr));
    top.push_back(scored ? TopLogprobsObject(lp) : json(nullptr));
    offsets.push_back(offset);
    offset += static_cast<int>(lp.sampled().token().size());
  };
  if (prompt != nullptr) {
    for (std::size_t i = 0; i < prompt->size(); ++i) add((*prompt)[i], !(i == 0 && prompt_has_first));
  }
  for (const auto& lp : generated) add(lp, true);
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

json ChatLogprobs(const std::vector<accllm::v1::TokenLogprobs>& generated) {
  json content = json::array();
  for (const auto& lp : generated) {
    json entry = ChatLogprobEntry(lp.sampled());
    json top = json::array();
    for (const auto& alt : lp.top()) top.push_back(ChatLogprobEntry(alt));
    entry["top_logprobs"] = top;
    content.push_back(entry);
  }
  return {{"content", content}, {"refusal", nullptr}};
}

json Usage(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

}  // namespace

json ApiError::ToJson() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

ApiError InvalidRequest(std::string message, std::string param) {
  ApiError e;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

std::string TokenText(const std::string& bytes) {
  if (IsValidUtf8(bytes)) return bytes;
  std::string out = "bytes:";
  for (unsigned char c : bytes) absl::StrAppendFormat(&out, "\\x%02x", c);
  return out;
}

std::variant<ApiRequest, ApiError> ParseApiRequest(Endpoint endpoint, const std::string& body,
                                                  const ParseContext& context) {
  const json root = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return InvalidRequest("the request body is not valid JSON");
  if (!root.is_object()) return InvalidRequest("the request body must be a JSON object");
  Fields f(root);
  ApiRequest out;
  out.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::kChat;

  const std::optional<std::string> model = f.String("model");
  if (!f.Failed() && !model) f.Fail("you must provide a model parameter", "model");
  out.model = model.value_or("");
  out.stream = f.Bool("stream").value_or(false);
  if (const json* options = f.Get("stream_options")) {
    if (!options->is_object()) {
      f.Fail("stream_options must be an object", "stream_options");
    } else {
      if (!out.stream) f.Fail("stream_options is only allowed with stream: true", "stream_options");
      Fields o(*options);
      out.include_usage = o.Bool("include_usage").value_or(false);
      if (o.Failed()) f.Fail(o.TakeError().message, "stream_options.include_usage");
    }
  }

  accllm::v1::GenerateRequest base;
  base.set_request_id(context.request_id);
  // max_tokens: completions default to 16 like OpenAI's; chat to the daemon's default.
  std::optional<int64_t> max_tokens = f.Integer("max_tokens", 0, 1 << 20);
  if (chat) {
    if (std::optional<int64_t> m = f.Integer("max_completion_tokens", 0, 1 << 20)) max_tokens = m;
  }
  const double temperature = f.Number("temperature", 0, 2).value_or(1.0);
  base.mutable_sampling()->set_temperature(static_cast<float>(temperature));
  base.mutable_sampling()->set_top_p(static_cast<float>(f.Number("top_p", 0, 1).value_or(1.0)));
  // top_k -1 is vLLM's "off", as is 0.
  base.mutable_sampling()->set_top_k(static_cast<int>(std::max<int64_t>(0, f.Integer("top_k", -1, 1 << 20).value_or(0))));
  base.mutable_sampling()->set_min_p(static_cast<float>(f.Number("min_p", 0, 1).value_or(0)));
  base.mutable_sampling()->set_repetition_penalty(static_cast<float>(f.Number("repetition_penalty", 0.01, 100).value_or(1)));
  const std::optional<int64_t> seed = f.Integer("seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
  base.set_ignore_eos(f.Bool("ignore_eos").value_or(false));
  for (const std::string& s : ParseStop(f)) base.add_stop(s);
  const int n = static_cast<int>(f.Integer("n", 1, kMaxChoices).value_or(1));
  (void)f.String("user");
  f.Unsupported("presence_penalty", 0, "; use repetition_penalty");
  f.Unsupported("frequency_penalty", 0, "; use repetition_penalty");
  f.Unsupported("logit_bias", json::object(), "");
  f.Unsupported("tools", json::array(), "");
  f.Unsupported("functions", json::array(), "");
  if (const std::optional<int64_t> best_of = f.Integer("best_of", 1, kMaxChoices); best_of && *best_of != n) {
    f.Fail("best_of other than n is not supported", "best_of");
  }
  if (const json* format = f.Get("response_format"); format != nullptr && !(format->is_object() && format->value("type", "") == "text")) {
    f.Fail("response_format other than {\"type\": \"text\"} is not supported", "response_format");
  }

  std::vector<Prompt> prompts;
  if (chat) {
    if (const std::optional<bool> lp = f.Bool("logprobs"); lp && *lp) out.logprobs = 0;
    if (std::optional<int64_t> top = f.Integer("top_logprobs", 0, kMaxChatTopLogprobs)) {
      if (out.logprobs < 0) f.Fail("top_logprobs needs logprobs: true", "top_logprobs");
      out.logprobs = static_cast<int>(*top);
    }
    const std::vector<ChatMessage> messages = ParseMessages(f);
    if (!f.Failed()) {
      absl::StatusOr<std::string> text = RenderChat(context.chat_template, messages);
      if (!text.ok()) {
        f.Fail(std::string(text.status().message()), "messages");
      } else {
        prompts.push_back({*std::move(text), {}});
      }
      for (const std::string& s : ChatStopStrings(context.chat_template)) {
        if (base.stop_size() < kMaxStops) base.add_stop(s);
      }
    }
  } else {
    out.echo = f.Bool("echo").value_or(false);
    if (std::optional<int64_t> lp = f.Integer("logprobs", 0, kMaxCompletionLogprobs)) out.logprobs = static_cast<int>(*lp);
    f.Unsupported("suffix", "", "");
    prompts = ParsePrompts(f);
  }
  if (f.Failed()) return f.TakeError();

  if (max_tokens && *max_tokens == 0 && !(out.echo && !chat)) {
    return InvalidRequest("max_tokens must be at least 1 (0 is allowed with echo, to score the prompt)",
                          chat ? "max_completion_tokens" : "max_tokens");
  }
  if (out.logprobs >= 0) {
    base.set_return_logprobs(true);
    base.set_top_logprobs(out.logprobs);
  }
  if (max_tokens && *max_tokens == 0) {
    base.set_prompt_only(true);  // echo: score the prompt, generate nothing
  } else if (max_tokens || !chat) {
    base.set_max_new_tokens(static_cast<int32_t>(max_tokens.value_or(16)));
  }  // else chat without a limit: the daemon's default (0 in the request)
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    out.echo_prompts.push_back(prompts[p].text.value_or(""));
    for (int i = 0; i < n; ++i) {
      ChoiceCall call;
      call.request = base;
      call.index = static_cast<int>(p) * n + i;
      call.prompt_index = static_cast<int>(p);
      // Echo needs the prompt's logprobs, or for token ids their text (which comes with them).
      if (out.echo && (out.logprobs >= 0 || !prompts[p].text)) call.request.set_return_prompt_logprobs(true);
      if (prompts[p].text) {
        call.request.set_text(*prompts[p].text);
      } else {
        call.request.mutable_token_ids()->mutable_ids()->Assign(prompts[p].ids.begin(), prompts[p].ids.end());
      }
      // A seed makes every choice reproducible; choices differ from each other.
      if (seed) call.request.mutable_sampling()->set_seed(static_cast<uint64_t>(*seed) + static_cast<uint64_t>(i));
      out.calls.push_back(std::move(call));
    }
  }
  return out;
}

std::string OpenAiFinishReason(accllm::v1::FinishReason reason) {
  switch (reason) {
    case accllm::v1::EOS:
    case accllm::v1::STOP_SEQUENCE: return "stop";
    case accllm::v1::MAX_TOKENS:
    case accllm::v1::TIME_LIMIT: return "length";
    default: return "";
  }
}

json CompletionResponse(const ApiRequest& request, const ResponseMeta& meta, const std::vector<ChoiceResult>& choices) {
  json out_choices = json::array();
  int prompt_tokens = 0, completion_tokens = 0;
  std::vector<bool> prompt_counted(request.echo_prompts.size(), false);
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    const ChoiceCall& call = request.calls[i];
    if (!prompt_counted[call.prompt_index]) {
      prompt_tokens += c.prompt_tokens;
      prompt_counted[call.prompt_index] = true;
    }
    completion_tokens += c.completion_tokens;
    if (request.endpoint == Endpoint::kChat) {
      out_choices.push_back({{"index", call.index},
                             {"message", {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}}},
                             {"logprobs", request.logprobs >= 0 ? ChatLogprobs(c.logprobs) : json(nullptr)},
                             {"finish_reason", c.finish_reason}});
    } else {
      std::string echoed;
      if (request.echo && call.request.has_text()) {
        echoed = request.echo_prompts[static_cast<std::size_t>(call.prompt_index)];
      } else if (request.echo) {
        for (const auto& lp : c.prompt_logprobs) echoed += lp.sampled().token();
      }
      json logprobs = nullptr;
      if (request.logprobs >= 0) {
        logprobs = CompletionLogprobs(request.echo ? &c.prompt_logprobs : nullptr, !call.request.has_text(), c.logprobs, 0);
      }
      out_choices.push_back({{"text", echoed + c.text},
                             {"index", call.index},
                             {"logprobs", logprobs},
                             {"finish_reason", c.finish_reason}});
    }
  }
  const bool chat = request.endpoint == Endpoint::kChat;
  json out = {{"id", meta.id},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"system_fingerprint", nullptr},
              {"choices", out_choices},
              {"usage", Usage(prompt_tokens, completion_tokens)}};
  return out;
}

json CompletionChunk(const ApiRequest& request, const ResponseMeta& meta, int index, const std::string& text,
                     const std::vector<accllm::v1::TokenLogprobs>& prompt_logprobs,
                     const std::vector<accllm::v1::TokenLogprobs>& logprobs, int text_offset,
                     const std::string& finish_reason, bool first) {
  const bool chat = request.endpoint == Endpoint::kChat;
  json choice;
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice = {{"index", index},
              {"delta", delta},
              {"logprobs", request.logprobs >= 0 && !logprobs.empty() ? ChatLogprobs(logprobs) : json(nullptr)},
              {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}};
  } else {
    json lp = nullptr;
    if (request.logprobs >= 0 && (!logprobs.empty() || !prompt_logprobs.empty())) {
      const ChoiceCall& call = request.calls[static_cast<std::size_t>(index)];
      lp = CompletionLogprobs(prompt_logprobs.empty() ? nullptr : &prompt_logprobs, !call.request.has_text(), logprobs,
                              text_offset);
    }
    choice = {{"text", text},
              {"index", index},
              {"logprobs", lp},
              {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}};
  }
  return {{"id", meta.id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", meta.created},
          {"model", meta.model},
          {"system_fingerprint", nullptr},
          {"choices", json::array({choice})}};
}

json UsageChunk(const ApiRequest& request, const ResponseMeta& meta, int prompt_tokens, int completion_tokens) {
  const bool chat = request.endpoint == Endpoint::kChat;
  return {{"id", meta.id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", meta.created},
          {"model", meta.model},
          {"system_fingerprint", nullptr},
          {"choices", json::array()},
          {"usage", Usage(prompt_tokens, completion_tokens)}};
}

}  // namespace accllm::gateway

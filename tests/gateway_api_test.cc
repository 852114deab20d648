// The OpenAI API as data: chat templates and request checking, without a network.
#include "gateway/chat_template.h"
#include "gateway/openai_api.h"

#include "gmock/gmock.h"

namespace accllm::gateway {
namespace {

using ::testing::HasSubstr;

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Name a cat."}};

TEST(ChatTemplateTest, RendersEachFamilysFormat) {
  EXPECT_EQ(*RenderChat(ChatTemplate::kChatml, kConversation),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello."
            "<|im_end|>\n<|im_start|>user\nName a cat.<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(*RenderChat(ChatTemplate::kLlama2, kConversation),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Name a cat. [/INST]");
  EXPECT_EQ(*RenderChat(ChatTemplate::kLlama3, kConversation),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>"
            "\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user"
            "<|end_header_id|>\n\nName a cat.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(*RenderChat(ChatTemplate::kMistral, kConversation),
            "[INST] Be brief.\n\nHi [/INST]Hello.</s>[INST] Name a cat. [/INST]");
  EXPECT_EQ(*RenderChat(ChatTemplate::kGemma, kConversation),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\nName a cat.<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(*RenderChat(ChatTemplate::kZephyr, {{"user", "Hi"}}), "<|user|>\nHi</s>\n<|assistant|>\n");
  EXPECT_EQ(*RenderChat(ChatTemplate::kPhi3, {{"user", "Hi"}}), "<|user|>\nHi<|end|>\n<|assistant|>\n");
  EXPECT_EQ(*RenderChat(ChatTemplate::kPlain, {{"user", "Once upon a time"}}), "Once upon a time");
}

TEST(ChatTemplateTest, RefusesUnknownRolesAndEmptyConversations) {
  EXPECT_THAT(std::string(RenderChat(ChatTemplate::kChatml, {{"tool", "x"}}).status().message()), HasSubstr("tool"));
  EXPECT_FALSE(RenderChat(ChatTemplate::kChatml, {}).ok());
  EXPECT_THAT(std::string(ParseChatTemplateName("vicuna").status().message()), HasSubstr("chatml"));
}

TEST(ChatTemplateTest, MatchesAModelsJinjaToTheBuiltInFamily) {
  EXPECT_EQ(MatchChatTemplate("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"),
            ChatTemplate::kChatml);
  EXPECT_EQ(MatchChatTemplate("{{ bos_token }}{% if messages[0]['role'] == 'system' %}<<SYS>>\\n[INST]"),
            ChatTemplate::kLlama2);
  EXPECT_EQ(MatchChatTemplate("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]"),
            ChatTemplate::kMistral);
  EXPECT_EQ(MatchChatTemplate("<|start_header_id|>' + message['role'] + '<|end_header_id|>"), ChatTemplate::kLlama3);
  EXPECT_EQ(MatchChatTemplate("<start_of_turn>"), ChatTemplate::kGemma);
  EXPECT_EQ(MatchChatTemplate("<|user|>\\n{{ content }}<|end|>"), ChatTemplate::kPhi3);
  EXPECT_EQ(MatchChatTemplate("<|user|>\\n{{ content }}</s>"), ChatTemplate::kZephyr);
  EXPECT_EQ(MatchChatTemplate(""), ChatTemplate::kPlain);
}

ApiRequest Parse(Endpoint endpoint, const std::string& body, ChatTemplate t = ChatTemplate::kPlain) {
  auto parsed = ParseApiRequest(endpoint, body, {t, "id-1"});
  EXPECT_TRUE(std::holds_alternative<ApiRequest>(parsed)) << std::get<ApiError>(parsed).message;
  return std::holds_alternative<ApiRequest>(parsed) ? std::get<ApiRequest>(parsed) : ApiRequest{};
}

ApiError ParseError(Endpoint endpoint, const std::string& body) {
  auto parsed = ParseApiRequest(endpoint, body, {});
  EXPECT_TRUE(std::holds_alternative<ApiError>(parsed)) << body;
  return std::holds_alternative<ApiError>(parsed) ? std::get<ApiError>(parsed) : ApiError{};
}

TEST(OpenAiRequestTest, BadFieldsNameTheParameter) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"model":"m","prompt":"a","temperature":"hot"})", "temperature"},
      {R"({"model":"m","prompt":"a","temperature":3})", "temperature"},
      {R"({"model":"m","prompt":"a","n":0})", "n"},
      {R"({"model":"m","prompt":"a","n":1.5})", "n"},
      {R"({"model":"m","prompt":"a","logprobs":6})", "logprobs"},
      {R"({"model":"m","prompt":"a","max_tokens":-1})", "max_tokens"},
      {R"({"model":"m","prompt":"a","max_tokens":0})", "max_tokens"},
      {R"({"model":"m","prompt":"a","stop":[1]})", "stop"},
      {R"({"model":"m","prompt":"a","stop":[""]})", "stop"},
      {R"({"model":"m","prompt":"a","stream":"yes"})", "stream"},
      {R"({"model":"m","prompt":"a","stream_options":{"include_usage":true}})", "stream_options"},
      {R"({"model":"m","prompt":"a","presence_penalty":0.5})", "presence_penalty"},
      {R"({"model":"m","prompt":"a","logit_bias":{"1":5}})", "logit_bias"},
      {R"({"model":"m","prompt":{"text":"a"}})", "prompt"},
      {R"({"model":"m","prompt":[-1, 2]})", "prompt"},
      {R"({"model":"m"})", "prompt"},
      {R"({"prompt":"a"})", "model"},
      {R"({"model":7,"prompt":"a"})", "model"},
      {R"({"model":"m","prompt":"a","seed":"1"})", "seed"},
  };
  for (const auto& [body, param] : bad) {
    const ApiError e = ParseError(Endpoint::kCompletions, body);
    EXPECT_EQ(e.http_status, 400) << body;
    EXPECT_EQ(e.param, param) << body << ": " << e.message;
    EXPECT_EQ(e.type, "invalid_request_error");
  }
  const std::vector<std::pair<std::string, std::string>> bad_chat = {
      {R"({"model":"m","messages":[]})", "messages"},
      {R"({"model":"m","messages":[{"role":"user"}]})", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})",
       "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"tool","content":"x"}]})", "messages"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2})", "top_logprobs"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21})", "top_logprobs"},
  };
  for (const auto& [body, param] : bad_chat) {
    const ApiError e = ParseError(Endpoint::kChat, body);
    EXPECT_EQ(e.param, param) << body << ": " << e.message;
  }
  EXPECT_THAT(ParseError(Endpoint::kChat, "{not json").message, HasSubstr("not valid JSON"));
  EXPECT_EQ(ParseError(Endpoint::kChat, "{not json").ToJson().dump(),
            R"({"error":{"code":null,"message":"the request body is not valid JSON","param":null,"type":"invalid_request_error"}})");
}

TEST(OpenAiRequestTest, PromptsTimesNBecomeOneCallEach) {
  const ApiRequest r = Parse(Endpoint::kCompletions,
                             R"({"model":"m","prompt":["a",[1,5,9]],"n":2,"seed":7,"max_tokens":5,"stop":"x",
                                 "unknown_field":{"ignored":true},"top_k":-1,"min_p":0.1,"ignore_eos":true})");
  ASSERT_EQ(r.calls.size(), 4u);
  EXPECT_EQ(r.calls[0].request.text(), "a");
  EXPECT_EQ(r.calls[2].request.token_ids().ids_size(), 3);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(r.calls[i].index, i);
    EXPECT_EQ(r.calls[i].prompt_index, i / 2);
    EXPECT_EQ(r.calls[i].request.max_new_tokens(), 5);
    EXPECT_EQ(r.calls[i].request.stop(0), "x");
    EXPECT_EQ(r.calls[i].request.sampling().top_k(), 0);
    EXPECT_TRUE(r.calls[i].request.ignore_eos());
    EXPECT_EQ(r.calls[i].request.request_id(), "id-1");
  }
  // Each choice its own seed, so choices differ and each is reproducible.
  EXPECT_EQ(r.calls[0].request.sampling().seed(), 7u);
  EXPECT_EQ(r.calls[1].request.sampling().seed(), 8u);
  // Completions default to 16 tokens, as OpenAI's do.
  EXPECT_EQ(Parse(Endpoint::kCompletions, R"({"model":"m","prompt":"a"})").calls[0].request.max_new_tokens(), 16);
}

TEST(OpenAiRequestTest, EchoWithNoNewTokensScoresThePrompt) {
  const ApiRequest r = Parse(Endpoint::kCompletions, R"({"model":"m","prompt":"a b","echo":true,"logprobs":2,"max_tokens":0})");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_TRUE(r.calls[0].request.prompt_only());
  EXPECT_TRUE(r.calls[0].request.return_prompt_logprobs());
  EXPECT_EQ(r.calls[0].request.top_logprobs(), 2);
  // Token ids are echoed as their text, which comes with their logprobs.
  EXPECT_TRUE(Parse(Endpoint::kCompletions, R"({"model":"m","prompt":[1,2],"echo":true})").calls[0].request.return_prompt_logprobs());
}

TEST(OpenAiRequestTest, ChatRendersTheTemplateAndStopsAtTheTurnsEnd) {
  const ApiRequest r = Parse(Endpoint::kChat,
                             R"({"model":"m","messages":[{"role":"developer","content":"Be brief."},
                                 {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"!"}]}],
                                 "max_completion_tokens":9,"logprobs":true,"top_logprobs":3})",
                             ChatTemplate::kChatml);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].request.text(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(r.calls[0].request.max_new_tokens(), 9);
  EXPECT_THAT(r.calls[0].request.stop(), ::testing::Contains("<|im_end|>"));
  EXPECT_TRUE(r.calls[0].request.return_logprobs());
  EXPECT_EQ(r.calls[0].request.top_logprobs(), 3);
  EXPECT_EQ(r.logprobs, 3);
  // Without a limit a chat generates up to the daemon's default.
  const ApiRequest unlimited = Parse(Endpoint::kChat, R"({"model":"m","messages":[{"role":"user","content":"Hi"}]})");
  EXPECT_FALSE(unlimited.calls[0].request.prompt_only());
  EXPECT_EQ(unlimited.calls[0].request.max_new_tokens(), 0);
  EXPECT_FALSE(unlimited.calls[0].request.return_logprobs());
}

TEST(OpenAiRequestTest, TokensThatAreNotWholeCharactersAreWrittenAsBytes) {
  EXPECT_EQ(TokenText(" cat"), " cat");
  EXPECT_EQ(TokenText("\xe2\x80"), "bytes:\\xe2\\x80");
  EXPECT_EQ(TokenText("\xc3\xa9"), "\xc3\xa9");
}

}  // namespace
}  // namespace accllm::gateway

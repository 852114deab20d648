// Chat templates: OpenAI-style messages to the prompt text a model was trained on.
//
// Models ship their template as Jinja (tokenizer_config.json's chat_template). Debian packages
// no C++ Jinja engine, and running arbitrary Jinja would need one, so the gateway carries the
// templates of the common model families as code and matches a model's Jinja text to one of
// them by its markers. `--chat-template NAME` overrides the match.
//
// The daemon encodes text prompts with BOS, so a template's leading BOS is not rendered.
// Markers such as <|im_start|> are rendered as text; each template's end-of-turn marker is also
// a stop string, so generation ends at the turn's end whatever the tokenizer makes of it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace accllm::gateway {

struct ChatMessage {
  std::string role;  // system, user or assistant
  std::string content;
};

enum class ChatTemplate { kPlain, kLlama2, kLlama3, kChatml, kMistral, kZephyr, kGemma, kPhi3 };

// "plain", "llama-2", "llama-3", "chatml", "mistral", "zephyr", "gemma", "phi-3".
const char* ChatTemplateName(ChatTemplate t);
std::vector<std::string> ChatTemplateNames();
// INVALID_ARGUMENT names the templates there are.
absl::StatusOr<ChatTemplate> ParseChatTemplateName(absl::string_view name);
// The built-in template a model's Jinja template is written for; kPlain when empty or unknown.
ChatTemplate MatchChatTemplate(absl::string_view jinja);

// The prompt for `messages`, ending where the assistant's reply begins. INVALID_ARGUMENT when a
// role is not system/user/assistant or the conversation has no message.
absl::StatusOr<std::string> RenderChat(ChatTemplate t, const std::vector<ChatMessage>& messages);

// Text that ends the assistant's turn (stop strings for generation); none for plain.
std::vector<std::string> ChatStopStrings(ChatTemplate t);

}  // namespace accllm::gateway

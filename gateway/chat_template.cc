#include "gateway/chat_template.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace accllm::gateway {
namespace {

struct Entry {
  ChatTemplate t;
  const char* name;
};
constexpr Entry kTemplates[] = {
    {ChatTemplate::kPlain, "plain"},     {ChatTemplate::kLlama2, "llama-2"}, {ChatTemplate::kLlama3, "llama-3"},
    {ChatTemplate::kChatml, "chatml"},   {ChatTemplate::kMistral, "mistral"}, {ChatTemplate::kZephyr, "zephyr"},
    {ChatTemplate::kGemma, "gemma"},     {ChatTemplate::kPhi3, "phi-3"},
};

// The system message folded into the first user message, for templates with no system role.
std::vector<ChatMessage> FoldSystem(const std::vector<ChatMessage>& messages, absl::string_view separator) {
  std::vector<ChatMessage> out;
  std::string system;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      system = system.empty() ? m.content : absl::StrCat(system, separator, m.content);
      continue;
    }
    out.push_back(m);
    if (!system.empty() && m.role == "user") {
      out.back().content = absl::StrCat(system, separator, m.content);
      system.clear();
    }
  }
  if (!system.empty()) out.push_back({"user", system});
  return out;
}

std::string Strip(absl::string_view s) { return std::string(absl::StripAsciiWhitespace(s)); }

std::string RenderLlama2(const std::vector<ChatMessage>& messages) {
  std::string out;
  std::string system;
  bool first_user = true;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      system = m.content;
    } else if (m.role == "user") {
      if (!first_user) out += "<s>";  // the first BOS is the daemon's
      std::string content = Strip(m.content);
      if (!system.empty()) {
        content = absl::StrCat("<<SYS>>\n", Strip(system), "\n<</SYS>>\n\n", content);
        system.clear();
      }
      absl::StrAppend(&out, "[INST] ", content, " [/INST]");
      first_user = false;
    } else {
      absl::StrAppend(&out, " ", Strip(m.content), " </s>");
    }
  }
  return out;
}

std::string RenderMistral(const std::vector<ChatMessage>& messages) {
  std::string out;
  for (const ChatMessage& m : FoldSystem(messages, "\n\n")) {
    if (m.role == "user") {
      absl::StrAppend(&out, "[INST] ", m.content, " [/INST]");
    } else {
      absl::StrAppend(&out, m.content, "</s>");
    }
  }
  return out;
}

// Templates of the form <open role>content<close> per message, then the assistant's opening.
std::string RenderTagged(const std::vector<ChatMessage>& messages, absl::string_view open_prefix,
                         absl::string_view open_suffix, absl::string_view close, bool gemma_roles = false) {
  std::string out;
  for (const ChatMessage& m : messages) {
    const std::string role = gemma_roles && m.role == "assistant" ? "model" : m.role;
    absl::StrAppend(&out, open_prefix, role, open_suffix, m.content, close);
  }
  absl::StrAppend(&out, open_prefix, gemma_roles ? "model" : "assistant", open_suffix);
  return out;
}

}  // namespace

const char* ChatTemplateName(ChatTemplate t) {
  for (const Entry& e : kTemplates) {
    if (e.t == t) return e.name;
  }
  return "plain";
}

std::vector<std::string> ChatTemplateNames() {
  std::vector<std::string> names;
  for (const Entry& e : kTemplates) names.emplace_back(e.name);
  return names;
}

absl::StatusOr<ChatTemplate> ParseChatTemplateName(absl::string_view name) {
  for (const Entry& e : kTemplates) {
    if (name == e.name) return e.t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat template \"", name, "\"; there are ", absl::StrJoin(ChatTemplateNames(), ", ")));
}

ChatTemplate MatchChatTemplate(absl::string_view jinja) {
  if (absl::StrContains(jinja, "<|start_header_id|>")) return ChatTemplate::kLlama3;
  if (absl::StrContains(jinja, "<|im_start|>")) return ChatTemplate::kChatml;
  if (absl::StrContains(jinja, "<start_of_turn>")) return ChatTemplate::kGemma;
  if (absl::StrContains(jinja, "<|user|>") && absl::StrContains(jinja, "<|end|>")) return ChatTemplate::kPhi3;
  if (absl::StrContains(jinja, "<|user|>")) return ChatTemplate::kZephyr;
  if (absl::StrContains(jinja, "<<SYS>>")) return ChatTemplate::kLlama2;
  if (absl::StrContains(jinja, "[INST]")) return ChatTemplate::kMistral;
  return ChatTemplate::kPlain;
}

absl::StatusOr<std::string> RenderChat(ChatTemplate t, const std::vector<ChatMessage>& messages) {
  if (messages.empty()) return absl::InvalidArgumentError("messages must hold at least one message");
  for (const ChatMessage& m : messages) {
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return absl::InvalidArgumentError(
          absl::StrCat("message role \"", m.role, "\" is not supported (system, user, assistant)"));
    }
  }
  switch (t) {
    case ChatTemplate::kPlain: {
      std::vector<std::string> parts;
      for (const ChatMessage& m : messages) parts.push_back(m.content);
      return absl::StrJoin(parts, "\n");
    }
    case ChatTemplate::kLlama2: return RenderLlama2(messages);
    case ChatTemplate::kMistral: return RenderMistral(messages);
    case ChatTemplate::kLlama3:
      return RenderTagged(messages, "<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>");
    case ChatTemplate::kChatml: return RenderTagged(messages, "<|im_start|>", "\n", "<|im_end|>\n");
    case ChatTemplate::kZephyr: return RenderTagged(messages, "<|", "|>\n", "</s>\n");
    case ChatTemplate::kGemma:
      return RenderTagged(FoldSystem(messages, "\n\n"), "<start_of_turn>", "\n", "<end_of_turn>\n", true);
    case ChatTemplate::kPhi3: return RenderTagged(messages, "<|", "|>\n", "<|end|>\n");
  }
  return absl::InternalError("unhandled chat template");
}

std::vector<std::string> ChatStopStrings(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kPlain: return {};
    case ChatTemplate::kLlama2:
    case ChatTemplate::kMistral: return {"</s>", "[INST]"};
    case ChatTemplate::kLlama3: return {"<|eot_id|>", "<|start_header_id|>"};
    case ChatTemplate::kChatml: return {"<|im_end|>", "<|im_start|>"};
    case ChatTemplate::kZephyr: return {"</s>", "<|user|>"};
    case ChatTemplate::kGemma: return {"<end_of_turn>", "<start_of_turn>"};
    case ChatTemplate::kPhi3: return {"<|end|>", "<|user|>"};
  }
  return {};
}

}  // namespace accllm::gateway

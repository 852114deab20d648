// UTF-8 helpers shared by the tokenizers and the streaming detokenizer.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace accllm {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

enum class Utf8Scan { kComplete, kIncomplete, kInvalid };

// Examines the sequence starting at text[0]. kComplete sets *length to its byte length;
// kIncomplete means text is a valid but unfinished prefix; kInvalid means text[0] cannot start a
// valid sequence (overlong forms and surrogates count as invalid) and sets *length to the bytes
// to replace with one U+FFFD (the maximal valid prefix, as the Unicode standard recommends).
Utf8Scan ScanUtf8(std::string_view text, std::size_t* length);

bool IsValidUtf8(std::string_view text);

// Removes from `text` the longest prefix of whole sequences (invalid ones replaced by U+FFFD)
// and returns it; a valid but unfinished tail is left in `text`.
std::string TakeCompleteUtf8(std::string& text);

}  // namespace accllm

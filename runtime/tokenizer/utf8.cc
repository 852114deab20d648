#include "runtime/tokenizer/utf8.h"

namespace accllm {

Utf8Scan ScanUtf8(std::string_view text, std::size_t* length) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  std::size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead < 0x80) {
    *length = 1;
    return Utf8Scan::kComplete;
  } else if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;  // overlong
    if (lead == 0xED) hi = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;  // overlong
    if (lead == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    *length = 1;
    return Utf8Scan::kInvalid;
  }
  for (std::size_t i = 1; i < need; ++i) {
    if (i >= text.size()) return Utf8Scan::kIncomplete;
    const unsigned char b = byte(i);
    const bool ok = i == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      *length = i;  // the maximal valid prefix is replaced as one unit
      return Utf8Scan::kInvalid;
    }
  }
  *length = need;
  return Utf8Scan::kComplete;
}

bool IsValidUtf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t len = 0;
    if (ScanUtf8(text.substr(i), &len) != Utf8Scan::kComplete) return false;
    i += len;
  }
  return true;
}

std::string TakeCompleteUtf8(std::string& text) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t len = 0;
    const Utf8Scan scan = ScanUtf8(std::string_view(text).substr(i), &len);
    if (scan == Utf8Scan::kIncomplete) break;
    if (scan == Utf8Scan::kInvalid) {
      out += kReplacementChar;
      i += len;
      continue;
    }
    out.append(text, i, len);
    i += len;
  }
  text.erase(0, i);
  return out;
}

}  // namespace accllm

// Turns a stream of token ids into text without ever emitting part of a UTF-8 character:
// byte-fallback tokens are held back until their character is complete.
#pragma once

#include <string>

#include "runtime/tokenizer/tokenizer.h"

namespace accllm {

class StreamDetokenizer {
 public:
  // `previous_token` is the last token already in context (e.g. the prompt's last token): it
  // decides whether the first piece's leading space is the dummy prefix after BOS.
  StreamDetokenizer(const Tokenizer& tokenizer, int previous_token)
      : tokenizer_(tokenizer), previous_(previous_token) {}

  // Feeds one token; returns the text completed by it (possibly empty).
  std::string Push(int id);
  // Ends the stream: an unfinished character becomes U+FFFD.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  int previous_;
  std::string pending_;
};

}  // namespace accllm

#include "runtime/tokenizer/utf8.h"

#include "gtest/gtest.h"

namespace accllm {
namespace {

TEST(Utf8Test, Validity) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x99\x82"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));               // truncated
  EXPECT_FALSE(IsValidUtf8("\x80"));               // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));           // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));       // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));   // above U+10FFFF
}

TEST(Utf8Test, TakeCompleteKeepsUnfinishedTail) {
  std::string text = "ab\xE6\x97";
  EXPECT_EQ(TakeCompleteUtf8(text), "ab");
  EXPECT_EQ(text, "\xE6\x97");
  text += "\xA5z";
  EXPECT_EQ(TakeCompleteUtf8(text), "\xE6\x97\xA5z");
  EXPECT_EQ(text, "");
}

TEST(Utf8Test, TakeCompleteReplacesInvalidSequencesOnce) {
  std::string text = "\xE6\x97x\x80y";
  EXPECT_EQ(TakeCompleteUtf8(text), std::string(kReplacementChar) + "x" + std::string(kReplacementChar) + "y");
  EXPECT_EQ(text, "");
}

}  // namespace
}  // namespace accllm

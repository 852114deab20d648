#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "runtime/tokenizer/stream_detokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/utf8.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::ReadFile;
using ::accllm::testing::RequireModelFile;
using ::accllm::testing::RequireSharedFile;
using ::accllm::testing::ScratchDir;
using ::accllm::testing::WriteFile;
using ::testing::HasSubstr;

const std::vector<std::string>& SampleTexts() {
  static const auto* texts = new std::vector<std::string>{
      "Once upon a time",
      "Lily and Ben were playing in the park. They liked to play with their toys!",
      "Numbers 12345 and punctuation: \"quotes\", (parens) -- dashes...",
      "line one\nline two\ttab",
      "caf\xC3\xA9 na\xC3\xAFve \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x99\x82",  // café naïve — 日本語 🙂
  };
  return *texts;
}

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(bin_, LoadTokenizer(RequireModelFile("tok512.bin").string()));
    ASSERT_OK_AND_ASSIGN(sp_, LoadTokenizer(RequireModelFile("tok512.model").string()));
  }
  std::unique_ptr<Tokenizer> bin_;
  std::unique_ptr<Tokenizer> sp_;
};

TEST_F(TokenizerTest, SpecialIdsAndVocabulary) {
  for (const Tokenizer* t : {bin_.get(), sp_.get()}) {
    EXPECT_EQ(t->vocab_size(), 512);
    EXPECT_EQ(t->bos_id(), 1);
    EXPECT_EQ(t->eos_id(), 2);
    EXPECT_EQ(t->TokenBytes(1), "");
    EXPECT_EQ(t->TokenBytes(2), "");
    EXPECT_EQ(t->TokenBytes(3 + 'A'), "A");  // byte-fallback token <0x41>
    EXPECT_EQ(t->TokenBytes(-1), "");
    EXPECT_EQ(t->TokenBytes(512), "");
  }
  for (int id = 3; id < 512; ++id) EXPECT_EQ(bin_->TokenBytes(id), sp_->TokenBytes(id)) << "id " << id;
}

TEST_F(TokenizerTest, KnownPromptIds) {
  ASSERT_OK_AND_ASSIGN(std::vector<int> ids, bin_->Encode("Once upon a time", /*add_bos=*/true));
  EXPECT_THAT(ids, ::testing::ElementsAre(1, 403, 407, 261, 378));
  ASSERT_OK_AND_ASSIGN(std::vector<int> no_bos, bin_->Encode("Once upon a time", /*add_bos=*/false));
  EXPECT_THAT(no_bos, ::testing::ElementsAre(403, 407, 261, 378));
  ASSERT_OK_AND_ASSIGN(std::vector<int> empty, bin_->Encode("", /*add_bos=*/true));
  EXPECT_THAT(empty, ::testing::ElementsAre(1));
}

TEST_F(TokenizerTest, BothFilesGiveTheSameIds) {
  std::vector<std::string> texts = SampleTexts();
  const std::string dev = ReadFile(RequireSharedFile("data/tinystories-dev.txt"));
  for (absl::string_view line : absl::StrSplit(dev, '\n', absl::SkipEmpty())) texts.emplace_back(line);
  ASSERT_GT(texts.size(), 10u);
  for (const std::string& text : texts) {
    ASSERT_OK_AND_ASSIGN(std::vector<int> a, bin_->Encode(text, true));
    ASSERT_OK_AND_ASSIGN(std::vector<int> b, sp_->Encode(text, true));
    EXPECT_EQ(a, b) << "text: " << text;
  }
}

TEST_F(TokenizerTest, RoundTripsIncludingNonAscii) {
  for (const Tokenizer* t : {bin_.get(), sp_.get()}) {
    for (const std::string& text : SampleTexts()) {
      ASSERT_OK_AND_ASSIGN(std::vector<int> ids, t->Encode(text, true));
      EXPECT_EQ(t->Decode(ids), text);
    }
  }
}

// tok512.model's normalizer removes extra whitespace (sentencepiece's default), which llama2.c's
// encoder does not do: the two agree wherever whitespace is already single spaces.
TEST_F(TokenizerTest, WhitespaceRuns) {
  const std::string text = "  two leading spaces,  double, trailing ";
  ASSERT_OK_AND_ASSIGN(std::vector<int> bin_ids, bin_->Encode(text, true));
  EXPECT_EQ(bin_->Decode(bin_ids), text);
  ASSERT_OK_AND_ASSIGN(std::vector<int> sp_ids, sp_->Encode(text, true));
  EXPECT_EQ(sp_->Decode(sp_ids), "two leading spaces, double, trailing");
}

TEST_F(TokenizerTest, UnknownCharactersFallBackToBytes) {
  const std::string text = "\xE6\x97\xA5";  // 日: not in a 512-token vocabulary
  ASSERT_OK_AND_ASSIGN(std::vector<int> ids, bin_->Encode(text, false));
  // The dummy-prefix space, then one byte token per UTF-8 byte.
  ASSERT_EQ(ids.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(ids[i + 1], 3 + static_cast<unsigned char>(text[i]));
    EXPECT_EQ(bin_->TokenBytes(ids[i + 1]), text.substr(i, 1));
  }
}

TEST_F(TokenizerTest, StreamingNeverEmitsPartialCharacters) {
  const std::string text = "a \xF0\x9F\x99\x82 b \xE6\x97\xA5";  // a 🙂 b 日
  ASSERT_OK_AND_ASSIGN(std::vector<int> ids, bin_->Encode(text, true));
  StreamDetokenizer detokenizer(*bin_, ids[0]);
  std::string streamed;
  for (std::size_t i = 1; i < ids.size(); ++i) {
    const std::string piece = detokenizer.Push(ids[i]);
    EXPECT_TRUE(IsValidUtf8(piece)) << "token " << i;
    streamed += piece;
  }
  streamed += detokenizer.Flush();
  EXPECT_EQ(streamed, text);
}

TEST_F(TokenizerTest, StreamingHoldsBackThenReplacesAnUnfinishedCharacter) {
  StreamDetokenizer detokenizer(*bin_, /*previous_token=*/400);
  EXPECT_EQ(detokenizer.Push(3 + 0xF0), "");
  EXPECT_EQ(detokenizer.Push(3 + 0x9F), "");
  EXPECT_EQ(detokenizer.Push(3 + 'x'), std::string(kReplacementChar) + "x");
  EXPECT_EQ(detokenizer.Push(3 + 0xE6), "");
  EXPECT_EQ(detokenizer.Flush(), kReplacementChar);
}

TEST_F(TokenizerTest, LeadingSpaceIsDroppedOnlyAfterBos) {
  ASSERT_OK_AND_ASSIGN(std::vector<int> ids, bin_->Encode("Once", false));
  StreamDetokenizer after_bos(*bin_, bin_->bos_id());
  StreamDetokenizer mid_text(*bin_, 400);
  std::string a, b;
  for (int id : ids) {
    a += after_bos.Push(id);
    b += mid_text.Push(id);
  }
  EXPECT_EQ(a, "Once");
  EXPECT_EQ(b, " Once");
}

TEST(TokenizerLoadTest, ErrorsNameTheFile) {
  ScratchDir dir;
  const std::string full = ReadFile(RequireModelFile("tok512.bin"));
  for (std::size_t cut : {std::size_t{0}, std::size_t{3}, std::size_t{6}, full.size() / 2 + 1, full.size() - 1}) {
    const auto path = dir / ("tok-cut-" + std::to_string(cut) + ".bin");
    WriteFile(path, full.substr(0, cut));
    const auto result = LoadTokenizer(path.string());
    ASSERT_FALSE(result.ok()) << "cut at " << cut;
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(path.string()));
  }
  const auto missing = LoadTokenizer((dir / "absent.model").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("absent.model"));
  WriteFile(dir / "garbage.model", "this is not a protobuf");
  const auto garbage = LoadTokenizer((dir / "garbage.model").string());
  ASSERT_FALSE(garbage.ok());
  EXPECT_THAT(std::string(garbage.status().message()), HasSubstr("garbage.model"));
}

}  // namespace
}  // namespace accllm

namespace accllm {
namespace {

// The reference implementation, through a client that is not ours: Debian's python3-sentencepiece
// must give the same ids as our reader of the same .model file.
TEST(SentencePieceOracleTest, SameIdsAsLibSentencePiece) {
  const std::string model = RequireModelFile("tok512.model").string();
  std::vector<std::string> texts = SampleTexts();
  texts.push_back("  two leading spaces,  double, trailing ");
  texts.push_back("tabs\tand\nnewlines");
  const std::string dev = ReadFile(RequireSharedFile("data/tinystories-dev.txt"));
  for (absl::string_view line : absl::StrSplit(dev, '\n', absl::SkipEmpty())) texts.emplace_back(line);

  ScratchDir dir;
  std::string joined;
  for (const std::string& t : texts) absl::StrAppend(&joined, t, "\x1e");  // record separator: texts hold newlines
  WriteFile(dir / "texts", joined);
  WriteFile(dir / "oracle.py",
            "import sys, sentencepiece\n"
            "sp = sentencepiece.SentencePieceProcessor(model_file=sys.argv[1])\n"
            "texts = open(sys.argv[2], encoding='utf-8').read().split('\\x1e')[:-1]\n"
            "with open(sys.argv[3], 'w') as out:\n"
            "    for t in texts: out.write(' '.join(map(str, sp.encode(t, out_type=int))) + '\\n')\n");
  const std::string command = absl::StrCat("/usr/bin/python3 ", (dir / "oracle.py").string(), " ", model, " ",
                                           (dir / "texts").string(), " ", (dir / "ids").string());
  ASSERT_EQ(std::system(command.c_str()), 0) << "needs Debian's python3-sentencepiece (scripts/setup.sh installs it)";
  const std::vector<std::string> lines = absl::StrSplit(ReadFile(dir / "ids"), '\n');
  ASSERT_GE(lines.size(), texts.size());
  ASSERT_OK_AND_ASSIGN(auto ours, LoadTokenizer(model));
  for (std::size_t i = 0; i < texts.size(); ++i) {
    ASSERT_OK_AND_ASSIGN(std::vector<int> ids, ours->Encode(texts[i], /*add_bos=*/false));
    const std::string got = absl::StrJoin(ids, " ");
    EXPECT_EQ(got, lines[i]) << "text: " << texts[i];
  }
}

}  // namespace
}  // namespace accllm

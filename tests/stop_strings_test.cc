#include "runtime/generate/stop_strings.h"

#include "gtest/gtest.h"

namespace accllm {
namespace {

// Feeds `pieces` one by one; returns everything emitted and whether it stopped.
std::pair<std::string, bool> Feed(StopStringMatcher& matcher, const std::vector<std::string>& pieces) {
  std::string out;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const auto r = matcher.Push(pieces[i], i + 1 == pieces.size());
    out += r.text;
    if (r.stopped) return {out, true};
  }
  return {out, false};
}

TEST(StopStringsTest, CutsExactlyBeforeTheStopString) {
  StopStringMatcher m({"END"});
  EXPECT_EQ(Feed(m, {"hello E", "N", "D and more"}), std::make_pair(std::string("hello "), true));
}

TEST(StopStringsTest, HoldsBackOnlyWhatCouldStillMatch) {
  StopStringMatcher m({"\n\n", "The end"});
  auto r = m.Push("abc\n", false);
  EXPECT_EQ(r.text, "abc");
  r = m.Push("x The e", false);
  EXPECT_EQ(r.text, "\nx ");
  r = m.Push("xit", false);
  EXPECT_EQ(r.text, "The exit");
  EXPECT_FALSE(r.stopped);
}

TEST(StopStringsTest, EarliestStopStringWins) {
  StopStringMatcher m({"cd", "b"});
  EXPECT_EQ(Feed(m, {"abcd"}), std::make_pair(std::string("a"), true));
}

TEST(StopStringsTest, FinalFlushReleasesHeldText) {
  StopStringMatcher m({"END"});
  EXPECT_EQ(m.Push("abc EN", false).text, "abc ");
  EXPECT_EQ(m.Push("", true).text, "EN");
}

TEST(StopStringsTest, NoStopStringsPassesEverythingThrough) {
  StopStringMatcher m({});
  EXPECT_EQ(m.Push("anything", false).text, "anything");
}

}  // namespace
}  // namespace accllm

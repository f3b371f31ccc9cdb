// Unit tests for launcher/batch_io.h: ids as JSON text (id_key, leading_id, parse_batch_line), the
// LineReader over a pipe (line numbers, blank and too-long lines, a last line without newline, waiting)
// and JsonlWriter::finished_and_repair over torn and corrupt output files.
#include "launcher/batch_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "runtime/core/error.h"

namespace gptj {
namespace {

TEST(IdKey, KeepsNumbersAsWrittenAndDropsWhitespace) {
  EXPECT_EQ(id_key("1e400"), "1e400");
  EXPECT_EQ(id_key("18446744073709551617"), "18446744073709551617");
  EXPECT_EQ(id_key("1.0"), "1.0");
  EXPECT_EQ(id_key(" [ 1 , {\"k\" : 2.50} ] "), "[1,{\"k\":2.50}]");
  EXPECT_EQ(id_key("\"a b\""), "\"a b\"");                // spaces inside strings stay
  EXPECT_EQ(id_key("\"\\u0061\\/\""), "\"a/\"");           // escapes are normalised
  EXPECT_EQ(id_key("\"say \\\"hi\\\"\""), "\"say \\\"hi\\\"\"");
}

TEST(LeadingId, OnlyAWholeFirstIdMember) {
  EXPECT_EQ(leading_id("{\"id\": 123, \"tokens\": [1"), "123");
  EXPECT_EQ(leading_id("{\"id\": 123}"), "123");
  EXPECT_EQ(leading_id("{\"id\": 123"), "");  // cut mid-number: 123 may be the start of 12345
  EXPECT_EQ(leading_id("{ \"\\u0069d\" : \"x\" , \"tok"), "\"x\"");
  EXPECT_EQ(leading_id("{\"id\": \"}{,\", \"tok"), "\"}{,\"");
  EXPECT_EQ(leading_id("{\"id\": [1, {\"a\": \"]\"}], \"tok"), "[1,{\"a\":\"]\"}]");
  EXPECT_EQ(leading_id("{\"tokens\": [1], \"id\": 2}"), "");
  EXPECT_EQ(leading_id("{\"id\": \"unterminated"), "");
  EXPECT_EQ(leading_id("{\"id\": 12abc, \"x\": 1}"), "");
  EXPECT_EQ(leading_id("not json"), "");
  EXPECT_EQ(leading_id(""), "");
}

TEST(ParseBatchLine, IdIsTheCanonicalText) {
  std::string id;
  BatchItem item = parse_batch_line("{\"tokens\": [1, 2], \"id\" : 1E400}", nullptr, 4, id);
  EXPECT_EQ(id, "1E400");
  EXPECT_EQ(item.id, "1E400");
  EXPECT_EQ(item.request.prompt, (std::vector<int32_t>{1, 2}));
  parse_batch_line("{\"id\": {\"b\": \"}\", \"a\": [ ]}, \"tokens\": [1]}", nullptr, 4, id);
  EXPECT_EQ(id, "{\"b\":\"}\",\"a\":[]}");
  // A line that is not valid JSON keeps the id it begins with; a line with two ids has none.
  EXPECT_THROW(parse_batch_line("{\"id\": 7, \"tokens\": [1", nullptr, 4, id), Error);
  EXPECT_EQ(id, "7");
  EXPECT_THROW(parse_batch_line("{\"id\": 7, \"id\": 8, \"tokens\": [1]}", nullptr, 4, id), Error);
  EXPECT_EQ(id, "");
  EXPECT_THROW(parse_batch_line("{\"id\": 9, \"tokens\": \"x\"}", nullptr, 4, id), Error);
  EXPECT_EQ(id, "9");
}

TEST(LineReader, ReadsAPipeLineByLine) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  LineReader reader(fds[0], "test pipe", 4);
  LineReader::Line line;
  EXPECT_EQ(reader.next(line, 0), LineReader::Status::kNotReady);  // nothing written yet
  const std::string text = "ab\n\n \t\r\nlonger line\nlast";
  ASSERT_EQ(::write(fds[1], text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ASSERT_EQ(reader.next(line), LineReader::Status::kLine);
  EXPECT_EQ(line.number, 1u);
  EXPECT_EQ(line.text, "ab");
  EXPECT_TRUE(line.terminated);
  EXPECT_FALSE(line.blank);
  ASSERT_EQ(reader.next(line), LineReader::Status::kLine);
  EXPECT_EQ(line.number, 2u);
  EXPECT_TRUE(line.blank);
  ASSERT_EQ(reader.next(line), LineReader::Status::kLine);
  EXPECT_EQ(line.number, 3u);
  EXPECT_TRUE(line.blank);
  ASSERT_EQ(reader.next(line), LineReader::Status::kLine);
  EXPECT_EQ(line.number, 4u);
  EXPECT_EQ(line.offset, 8u);
  EXPECT_TRUE(line.too_long);
  EXPECT_EQ(line.length, 11u);
  EXPECT_EQ(line.text, "long");  // only the first max_line_bytes are kept
  // "last" has no newline yet: the reader waits for more rather than ending the line.
  EXPECT_EQ(reader.next(line, 0), LineReader::Status::kNotReady);
  ASSERT_EQ(::write(fds[1], "er", 2), 2);
  ::close(fds[1]);
  ASSERT_EQ(reader.next(line), LineReader::Status::kLine);
  EXPECT_EQ(line.number, 5u);
  EXPECT_EQ(line.text, "last");  // "laster" cut to 4 bytes
  EXPECT_EQ(line.length, 6u);
  EXPECT_FALSE(line.terminated);
  EXPECT_EQ(reader.next(line), LineReader::Status::kEnd);
  EXPECT_TRUE(reader.at_end());
}

// wait_ms bounds the whole call: a line trickling in through a pipe (a byte every 50 ms for 3 s)
// must not hold the caller — rank 0's main thread, which owes the workers keepalives — until it ends.
TEST(LineReader, TheWaitBoundsTheWholeCallWhileALineTricklesIn) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  LineReader reader(fds[0], "test pipe", 1 << 10);
  std::thread writer([fd = fds[1]] {
    for (int i = 0; i < 60; ++i) {
      if (::write(fd, "x", 1) != 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    (void)!::write(fd, "\n", 1);
    ::close(fd);
  });
  LineReader::Line line;
  const auto start = std::chrono::steady_clock::now();
  const LineReader::Status first = reader.next(line, 200);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(first, LineReader::Status::kNotReady);
  EXPECT_LT(took, 2.0);  // the line takes 3 s to arrive; the wait was 0.2 s
  LineReader::Status status = first;
  while (status == LineReader::Status::kNotReady) status = reader.next(line, 200);
  writer.join();
  ASSERT_EQ(status, LineReader::Status::kLine);  // the pieces make one line
  EXPECT_EQ(line.text, std::string(60, 'x'));
  EXPECT_EQ(line.number, 1u);
}

class Repair : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/batch_io_test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/out.jsonl";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void put(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }
  std::string get(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  std::string dir_, path_;
};

const std::string kResult1 = "{\"id\":1,\"text\":\"a\",\"finish_reason\":\"length\"}\n";
const std::string kResult2 = "{\"id\":\"two\",\"text\":\"b\",\"finish_reason\":\"stop\"}\n";
const std::string kError3 = "{\"id\":3,\"error\":\"line 3: bad\",\"line\":3}\n";

TEST_F(Repair, CutsOnlyATornLastLine) {
  put(path_, kResult1 + kError3 + "{\"id\":4,\"te");
  JsonlWriter writer(path_, true);
  const auto keys = writer.finished_and_repair();
  EXPECT_EQ(keys, (std::unordered_set<std::string>{"1", "line:3"}));  // an error line stands for its line
  EXPECT_EQ(get(path_), kResult1 + kError3);
  EXPECT_FALSE(std::filesystem::exists(path_ + ".corrupt"));
}

TEST_F(Repair, KeepsACompleteLastLineWithoutNewline) {
  put(path_, kResult1 + kResult2.substr(0, kResult2.size() - 1));
  JsonlWriter writer(path_, true);
  EXPECT_EQ(writer.finished_and_repair(), (std::unordered_set<std::string>{"1", "\"two\""}));
  writer.write("5", boost::json::object{{"error", "x"}});
  EXPECT_EQ(get(path_), kResult1 + kResult2 + "{\"id\":5,\"error\":\"x\"}\n");
}

TEST_F(Repair, MovesCorruptMiddleLinesAsideAndKeepsTheRest) {
  const std::string bad1 = "{\"id\":7,\"text\":\"gar\n", bad2 = "{\"no_id\":1,\"finish_reason\":\"length\"}\n";
  put(path_, kResult1 + bad1 + "\n" + kResult2 + bad2 + kError3 + "{\"id\":9");
  ::chmod(path_.c_str(), 0640);
  JsonlWriter writer(path_, true);
  EXPECT_EQ(writer.finished_and_repair(), (std::unordered_set<std::string>{"1", "\"two\"", "line:3"}));
  EXPECT_EQ(get(path_), kResult1 + "\n" + kResult2 + kError3);
  EXPECT_EQ(get(path_ + ".corrupt"), bad1 + bad2);
  EXPECT_FALSE(std::filesystem::exists(path_ + ".tmp"));
  EXPECT_EQ(std::filesystem::status(path_).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                std::filesystem::perms::group_read);
  // The writer now appends to the rewritten file, which it holds locked.
  writer.write("8", boost::json::object{{"error", "y"}});
  EXPECT_EQ(get(path_), kResult1 + "\n" + kResult2 + kError3 + "{\"id\":8,\"error\":\"y\"}\n");
  EXPECT_THROW(JsonlWriter(path_, true), Error);
}

}  // namespace
}  // namespace gptj

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <nlohmann/json.hpp>
#include <random>

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/data/gpt2_tokenizer.h"
#include "helpers.h"

using namespace efftrain;
using Catch::Matchers::ContainsSubstring;

namespace {
// The real GPT-2 files: ../shared/data/gpt2 beside the checkout (CI has it).
std::string vocab_dir() { return test::shared_data_dir() + "/gpt2"; }

const data::Gpt2Tokenizer& real() {
  static const data::Gpt2Tokenizer t = data::Gpt2Tokenizer::load(vocab_dir());
  return t;
}

std::string error_of(const std::function<void()>& f) { return test::user_error_of(f); }

// A 4-token toy vocabulary: every byte, plus merges "a b" -> "ab" and "ab c" -> "abc".
std::string toy_vocab(const test::TempDir& d, const std::string& merges = "#version: 0.2\na b\nab c\n") {
  nlohmann::json v = nlohmann::json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b) {
    uint32_t cp = b;
    const bool direct = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    static int extra = 0;
    if (b == 0) extra = 0;
    if (!direct) cp = 256 + extra++;
    std::string s;
    if (cp < 0x80) s.push_back(static_cast<char>(cp));
    else if (cp < 0x800) {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    v[s] = id++;
  }
  v["ab"] = id++;
  v["abc"] = id++;
  d.write("toy/vocab.json", v.dump());
  d.write("toy/merges.txt", merges);
  return d.file("toy");
}
}  // namespace

TEST_CASE("GPT-2 tokenizer: golden ids of the hard cases (two reference encoders agree on them)") {
  if (!files::exists(vocab_dir() + "/vocab.json")) SKIP("no shared data (../shared/data) beside the checkout");
  const auto golden = nlohmann::json::parse(test::read_text(test::source_path("tests/data/gpt2_golden.json")));
  REQUIRE(golden["cases"].size() >= 20);
  for (const auto& c : golden["cases"]) {
    const std::string text = c["text"];
    INFO("text: " << text);
    const auto ids = real().encode(text);
    CHECK(ids == c["ids"].get<std::vector<int32_t>>());
    CHECK(real().decode(ids) == text);
  }
  CHECK(real().vocab_size() == 50257);
  CHECK(real().eot_id() == 50256);
  CHECK(real().encode("Hello") == std::vector<int32_t>{15496});
  CHECK(real().encode(" world") == std::vector<int32_t>{995});
}

TEST_CASE("GPT-2 tokenizer: decode inverts encode on random UTF-8") {
  if (!files::exists(vocab_dir() + "/vocab.json")) SKIP("no shared data (../shared/data) beside the checkout");
  std::mt19937 rng(123);
  const std::vector<std::pair<uint32_t, uint32_t>> blocks = {
      {0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x17F}, {0x370, 0x3FF}, {0x400, 0x4FF}, {0x600, 0x6FF},
      {0x900, 0x97F}, {0x2000, 0x206F}, {0x3000, 0x30FF}, {0x4E00, 0x4FFF}, {0x1F300, 0x1F64F}};
  for (int trial = 0; trial < 200; ++trial) {
    std::string s;
    const int len = 1 + static_cast<int>(rng() % 60);
    for (int i = 0; i < len; ++i) {
      const auto& b = blocks[rng() % blocks.size()];
      const uint32_t cp = b.first + rng() % (b.second - b.first + 1);
      if (cp < 0x80) s.push_back(static_cast<char>(cp));
      else if (cp < 0x800) { s.push_back(static_cast<char>(0xC0 | (cp >> 6))); s.push_back(static_cast<char>(0x80 | (cp & 0x3F))); }
      else if (cp < 0x10000) { s.push_back(static_cast<char>(0xE0 | (cp >> 12))); s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F))); s.push_back(static_cast<char>(0x80 | (cp & 0x3F))); }
      else { s.push_back(static_cast<char>(0xF0 | (cp >> 18))); s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F))); s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F))); s.push_back(static_cast<char>(0x80 | (cp & 0x3F))); }
    }
    INFO("text: " << s);
    CHECK(real().decode(real().encode(s)) == s);
  }
}

TEST_CASE("GPT-2 pre-tokenizer: contractions, optional space, whitespace lookahead") {
  using V = std::vector<std::string>;
  CHECK(data::Gpt2Tokenizer::pretokenize("I'm here") == V{"I", "'m", " here"});
  CHECK(data::Gpt2Tokenizer::pretokenize("a  b") == V{"a", " ", " b"});
  CHECK(data::Gpt2Tokenizer::pretokenize("x \n y") == V{"x", " \n", " y"});
  CHECK(data::Gpt2Tokenizer::pretokenize("end   ") == V{"end", "   "});
  CHECK(data::Gpt2Tokenizer::pretokenize("\nword") == V{"\n", "word"});
  CHECK(data::Gpt2Tokenizer::pretokenize("abc123 ?!") == V{"abc", "123", " ?!"});
}

TEST_CASE("GPT-2 tokenizer: invalid UTF-8 is refused with the byte offset") {
  test::TempDir d;
  const auto tok = data::Gpt2Tokenizer::load(toy_vocab(d));
  CHECK_THAT(error_of([&] { tok.encode(std::string("ok \xC3\x28 bad"), true, "f.txt"); }),
             ContainsSubstring("f.txt: invalid UTF-8 at byte offset 3"));
  CHECK_THAT(error_of([&] { tok.encode(std::string("\xED\xA0\x80"), true, "s"); }),
             ContainsSubstring("offset 0"));  // a surrogate
  CHECK_THAT(error_of([&] { tok.encode(std::string("ab\xC0\xAF"), true, "o"); }),
             ContainsSubstring("offset 2"));  // overlong
}

TEST_CASE("GPT-2 tokenizer: merges apply by rank on a toy vocabulary") {
  test::TempDir d;
  const auto tok = data::Gpt2Tokenizer::load(toy_vocab(d));
  CHECK(tok.encode("abc") == std::vector<int32_t>{257});
  CHECK(tok.encode("abab").size() == 2);
  CHECK(tok.decode(tok.encode("xabcx")) == "xabcx");
}

TEST_CASE("GPT-2 tokenizer: missing or malformed vocabulary and merges are user errors naming the file") {
  test::TempDir d;
  CHECK_THAT(error_of([&] { data::Gpt2Tokenizer::load(d.path()); }), ContainsSubstring("vocab.json: GPT-2 vocabulary file not found"));
  toy_vocab(d);
  d.write("toy/merges.txt", "#version: 0.2\na b\nnot-a-merge\n");
  CHECK_THAT(error_of([&] { data::Gpt2Tokenizer::load(d.file("toy")); }), ContainsSubstring("merges.txt:3: expected two tokens"));
  d.write("toy/merges.txt", "#version: 0.2\nq z\n");
  CHECK_THAT(error_of([&] { data::Gpt2Tokenizer::load(d.file("toy")); }), ContainsSubstring("not in"));
  d.write("toy/vocab.json", "{\"a\": 0,");
  CHECK_THAT(error_of([&] { data::Gpt2Tokenizer::load(d.file("toy")); }), ContainsSubstring("vocab.json: not valid JSON"));
  d.write("toy/vocab.json", "{\"a\": 0, \"b\": 5}");
  CHECK_THAT(error_of([&] { data::Gpt2Tokenizer::load(d.file("toy")); }), ContainsSubstring("ids must be"));
}

TEST_CASE("token cache: reused while unchanged, rebuilt when the text or the vocabulary changes") {
  test::TempDir d;
  const auto text = d.write("t.txt", "abc abc abd");
  const auto tok = data::Gpt2Tokenizer::load(toy_vocab(d));
  bool rebuilt = false;
  const auto first = data::tokenize_file_cached(tok, text, d.file("cache"), &rebuilt);
  CHECK(rebuilt);
  const auto again = data::tokenize_file_cached(tok, text, d.file("cache"), &rebuilt);
  CHECK_FALSE(rebuilt);
  CHECK(first == again);
  d.write("t.txt", "abc abc abc");
  const auto changed = data::tokenize_file_cached(tok, text, d.file("cache"), &rebuilt);
  CHECK(rebuilt);
  CHECK(changed != first);
  toy_vocab(d, "#version: 0.2\na b\n");  // a different vocabulary: "abc" no longer merges fully
  const auto tok2 = data::Gpt2Tokenizer::load(d.file("toy"));
  const auto other = data::tokenize_file_cached(tok2, text, d.file("cache"), &rebuilt);
  CHECK(rebuilt);
  CHECK(other.size() > changed.size());
}

TEST_CASE("GPT-2 tokenizer: a vocabulary with a number too large for a double is a user error (fuzzer finding)") {
  test::TempDir d;
  // tests/fuzz/regressions/tokenizer-*.bin: mode byte, vocab.json text, NUL, merges.txt text.
  const std::string input = test::read_text(test::source_path("tests/fuzz/regressions/tokenizer-vocab-number-overflow.bin"));
  REQUIRE(input.size() > 1);
  const std::string rest = input.substr(1);
  const auto zero = rest.find('\0');
  const std::string vocab = d.write("vocab.json", rest.substr(0, zero));
  const std::string merges = d.write("merges.txt", zero == std::string::npos ? "" : rest.substr(zero + 1));
  std::string message = "(no error)";
  try {
    data::Gpt2Tokenizer::from_files(vocab, merges);
  } catch (const UserError& e) {
    message = e.what();
  }
  CHECK_THAT(message, ContainsSubstring("vocab.json: not usable JSON"));
}

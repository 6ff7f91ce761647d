// libFuzzer target: the GPT-2 tokenizer. Input byte 0 picks the mode:
//   even: encode the rest as text with the real vocabulary (EFFTRAIN_FUZZ_VOCAB, default
//         .data/prepared/gpt2); encode -> decode must give the text back when it is UTF-8.
//   odd:  the rest is "vocab.json" and "merges.txt" separated by a 0 byte: loading them must
//         succeed or throw efftrain::UserError.
// Built by scripts/fuzz.sh.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "efftrain/core/error.h"
#include "efftrain/data/gpt2_tokenizer.h"
#include "fuzz_files.h"

namespace {
std::optional<efftrain::data::Gpt2Tokenizer> g_tok;
std::string g_dir;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* vocab = std::getenv("EFFTRAIN_FUZZ_VOCAB");
  g_tok = efftrain::data::Gpt2Tokenizer::load(vocab ? vocab : ".data/prepared/gpt2");
  char tmpl[] = "/tmp/efftrain-fuzz-tok-XXXXXX";
  if (!mkdtemp(tmpl)) std::abort();
  g_dir = tmpl;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    try {
      const auto ids = g_tok->encode(rest, /*allow_special=*/true, "fuzz input");
      for (int32_t id : ids)
        if (id < 0 || id >= g_tok->vocab_size()) std::abort();
      if (g_tok->decode(ids) != rest) std::abort();  // reached only for valid UTF-8
    } catch (const efftrain::UserError&) {
      // invalid UTF-8 is refused with a message
    }
    return 0;
  }
  const auto zero = rest.find('\0');
  efftrain::fuzz::write_file(g_dir + "/vocab.json", rest.substr(0, zero));
  efftrain::fuzz::write_file(g_dir + "/merges.txt", zero == std::string::npos ? "" : rest.substr(zero + 1));
  try {
    auto tok = efftrain::data::Gpt2Tokenizer::from_files(g_dir + "/vocab.json", g_dir + "/merges.txt");
    (void)tok.encode("hello world", true, "probe");
  } catch (const efftrain::UserError&) {
  }
  return 0;
}

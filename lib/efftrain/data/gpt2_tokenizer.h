// GPT-2's byte-level BPE, byte-exact with OpenAI's encoder.py: the same pre-tokenization
// regex ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+) with the
// Unicode classes of the `regex` module (unicode_tables.inc), the byte-to-unicode map, merge
// ranks, and <|endoftext|> (50256). Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace efftrain::data {

class Gpt2Tokenizer {
 public:
  // Loads vocab.json + merges.txt (Hugging Face names) or encoder.json + vocab.bpe (OpenAI's)
  // from `dir`. UserError naming the file and the problem when they are missing or malformed.
  static Gpt2Tokenizer load(const std::string& dir);
  static Gpt2Tokenizer from_files(const std::string& vocab_json, const std::string& merges_txt);

  // Encodes UTF-8 text; "<|endoftext|>" in the text becomes the special id when
  // `allow_special`. Invalid UTF-8 is a UserError naming `what` and the byte offset.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true,
                              const std::string& what = "text") const;
  std::string decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  int32_t eot_id() const { return eot_id_; }
  // SHA-256 of the vocabulary and merges files' contents (cache keys).
  const std::string& hash() const { return hash_; }

  // The pre-tokenizer alone: the pieces the regex would find, as UTF-8 strings.
  static std::vector<std::string> pretokenize(std::string_view text, const std::string& what = "text");

 private:
  void bpe(const std::string& piece, std::vector<int32_t>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out, const std::string& what,
                       size_t offset) const;

  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;          // byte-level unicode strings
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a,b) -> (rank, merged id)
  int32_t byte_id_[256];
  std::string byte_char_[256];                    // UTF-8 of the unicode char standing for a byte
  std::unordered_map<uint32_t, uint8_t> char_byte_;  // inverse of the map above, by code point
  int32_t eot_id_ = -1;
  std::string hash_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// Token ids of a text file, cached next to the run's data cache as
// <cache_dir>/<file name>-<source hash>-<vocab hash>.tok (header: magic, dtype uint16, token
// count, vocabulary and source SHA-256; then the ids), written atomically and reused while the
// source file and the vocabulary are unchanged. `rebuilt` says whether it was (re)encoded.
std::vector<uint16_t> tokenize_file_cached(const Gpt2Tokenizer& tok, const std::string& path,
                                           const std::string& cache_dir, bool* rebuilt = nullptr);

}  // namespace efftrain::data

#include "efftrain/data/gpt2_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstring>
#include <fstream>

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/util.h"

namespace efftrain::data {

namespace {

struct CodeRange {
  uint32_t lo, hi;
};
#include "efftrain/data/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], uint32_t cp) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (cp > table[mid].hi) lo = mid + 1;
    else if (cp < table[mid].lo) hi = mid;
    else return true;
  }
  return false;
}

enum class Cls : uint8_t { Letter, Number, Space, Other };

Cls classify(uint32_t cp) {
  if (cp < 128) {  // fast path
    if ((cp | 32) >= 'a' && (cp | 32) <= 'z') return Cls::Letter;
    if (cp >= '0' && cp <= '9') return Cls::Number;
    if (cp == ' ' || (cp >= 9 && cp <= 13) || (cp >= 0x1C && cp <= 0x1F)) return in_ranges(kSpace, cp) ? Cls::Space : Cls::Other;
    return Cls::Other;
  }
  if (in_ranges(kLetter, cp)) return Cls::Letter;
  if (in_ranges(kNumber, cp)) return Cls::Number;
  if (in_ranges(kSpace, cp)) return Cls::Space;
  return Cls::Other;
}

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes UTF-8 into code points and the byte offset where each starts; UserError at the first
// invalid sequence (overlong forms, surrogates and values past U+10FFFF are invalid).
void decode_utf8(std::string_view s, std::vector<uint32_t>& cps, std::vector<uint32_t>& offsets,
                 const std::string& what, size_t base) {
  cps.clear();
  offsets.clear();
  cps.reserve(s.size());
  offsets.reserve(s.size() + 1);
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  auto bad = [&](size_t at) {
    throw UserError(what + ": invalid UTF-8 at byte offset " + std::to_string(base + at));
  };
  while (i < s.size()) {
    const unsigned char c = p[i];
    uint32_t cp;
    size_t len;
    if (c < 0x80) { cp = c; len = 1; }
    else if ((c & 0xE0) == 0xC0) { cp = c & 0x1F; len = 2; }
    else if ((c & 0xF0) == 0xE0) { cp = c & 0x0F; len = 3; }
    else if ((c & 0xF8) == 0xF0) { cp = c & 0x07; len = 4; }
    else bad(i);
    if (i + len > s.size()) bad(i);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) bad(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      bad(i);
    cps.push_back(cp);
    offsets.push_back(static_cast<uint32_t>(i));
    i += len;
  }
  offsets.push_back(static_cast<uint32_t>(s.size()));
}

// Calls emit(begin, end) (code-point indices) for each piece the GPT-2 regex finds.
template <class Emit>
void scan(const std::vector<uint32_t>& cps, Emit emit) {
  const size_t n = cps.size();
  std::vector<Cls> cls(n);
  for (size_t i = 0; i < n; ++i) cls[i] = classify(cps[i]);
  static const char* const kSuffixes[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  size_t i = 0;
  while (i < n) {
    if (cps[i] == '\'') {  // 's|'t|'re|'ve|'m|'ll|'d
      bool matched = false;
      for (const char* suf : kSuffixes) {
        const size_t len = std::strlen(suf);
        if (i + 1 + len > n) continue;
        bool ok = true;
        for (size_t k = 0; k < len; ++k)
          if (cps[i + 1 + k] != static_cast<uint32_t>(suf[k])) { ok = false; break; }
        if (ok) {
          emit(i, i + 1 + len);
          i += 1 + len;
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    size_t start = i, k = i;
    if (cps[i] == ' ' && i + 1 < n && cls[i + 1] != Cls::Space) k = i + 1;  //  ?X+
    if (cls[k] != Cls::Space) {
      const Cls c = cls[k];
      while (k < n && cls[k] == c) ++k;
      emit(start, k);
      i = k;
      continue;
    }
    size_t e = i;  // whitespace: \s+(?!\S) then \s+
    while (e < n && cls[e] == Cls::Space) ++e;
    if (e < n && e - i >= 2) e -= 1;
    emit(i, e);
    i = e;
  }
}

std::vector<std::pair<uint32_t, uint8_t>> bytes_to_unicode() {
  std::vector<std::pair<uint32_t, uint8_t>> out;
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) out.emplace_back(direct[b] ? static_cast<uint32_t>(b) : next++, static_cast<uint8_t>(b));
  return out;
}

}  // namespace

std::vector<std::string> Gpt2Tokenizer::pretokenize(std::string_view text, const std::string& what) {
  std::vector<uint32_t> cps, offs;
  decode_utf8(text, cps, offs, what, 0);
  std::vector<std::string> out;
  scan(cps, [&](size_t a, size_t b) { out.emplace_back(text.substr(offs[a], offs[b] - offs[a])); });
  return out;
}

Gpt2Tokenizer Gpt2Tokenizer::load(const std::string& dir) {
  if (files::exists(dir + "/vocab.json") || !files::exists(dir + "/encoder.json"))
    return from_files(dir + "/vocab.json", dir + "/merges.txt");
  return from_files(dir + "/encoder.json", dir + "/vocab.bpe");
}

Gpt2Tokenizer Gpt2Tokenizer::from_files(const std::string& vocab_json, const std::string& merges_txt) {
  if (!files::exists(vocab_json)) throw UserError(vocab_json + ": GPT-2 vocabulary file not found");
  if (!files::exists(merges_txt)) throw UserError(merges_txt + ": GPT-2 merges file not found");
  const std::string vtext = read_file(vocab_json, "GPT-2 vocabulary");
  const std::string mtext = read_file(merges_txt, "GPT-2 merges");
  Gpt2Tokenizer t;
  t.hash_ = sha256_hex(sha256_hex(vtext) + sha256_hex(mtext));
  nlohmann::json v;
  try {
    v = nlohmann::json::parse(vtext);
  } catch (const nlohmann::json::parse_error& e) {
    throw UserError(vocab_json + ": not valid JSON (byte " + std::to_string(e.byte) + ")");
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double (fuzzer finding)
    throw UserError(vocab_json + ": not usable JSON (" + e.what() + ")");
  }
  if (!v.is_object() || v.empty()) throw UserError(vocab_json + ": expected a JSON object of token -> id");
  t.id_to_token_.assign(v.size(), std::string());
  std::vector<bool> seen(v.size(), false);
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_number_integer())
      throw UserError(vocab_json + ": token " + nlohmann::json(it.key()).dump() + " has a non-integer id");
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(v.size()) || seen[id])
      throw UserError(vocab_json + ": ids must be 0.." + std::to_string(v.size() - 1) + ", each once; found " +
                      std::to_string(id) + " for " + nlohmann::json(it.key()).dump());
    seen[id] = true;
    t.id_to_token_[id] = it.key();
    t.token_to_id_[it.key()] = static_cast<int32_t>(id);
  }
  for (const auto& [cp, byte] : bytes_to_unicode()) {
    std::string s;
    append_utf8(s, cp);
    auto it = t.token_to_id_.find(s);
    if (it == t.token_to_id_.end())
      throw UserError(vocab_json + ": no token for byte " + std::to_string(byte) + " (a byte-level BPE vocabulary has all 256)");
    t.byte_id_[byte] = it->second;
    t.byte_char_[byte] = s;
    t.char_byte_[cp] = byte;
  }
  if (auto it = t.token_to_id_.find("<|endoftext|>"); it != t.token_to_id_.end()) t.eot_id_ = it->second;

  size_t line_no = 0, pos = 0;
  int32_t rank = 0;
  while (pos < mtext.size()) {
    size_t end = mtext.find('\n', pos);
    if (end == std::string::npos) end = mtext.size();
    std::string line = mtext.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() || line.find(' ', sp + 1) != std::string::npos)
      throw UserError(merges_txt + ":" + std::to_string(line_no) + ": expected two tokens separated by one space, found '" +
                      line + "'");
    const std::string a = line.substr(0, sp), b = line.substr(sp + 1);
    auto ia = t.token_to_id_.find(a), ib = t.token_to_id_.find(b), im = t.token_to_id_.find(a + b);
    if (ia == t.token_to_id_.end() || ib == t.token_to_id_.end() || im == t.token_to_id_.end())
      throw UserError(merges_txt + ":" + std::to_string(line_no) + ": merge '" + line +
                      "' uses or makes a token that is not in " + vocab_json);
    const uint64_t key = (static_cast<uint64_t>(ia->second) << 32) | static_cast<uint32_t>(ib->second);
    t.merges_.emplace(key, std::make_pair(rank++, im->second));
  }
  if (t.merges_.empty()) throw UserError(merges_txt + ": no merges found");
  return t;
}

void Gpt2Tokenizer::bpe(const std::string& piece, std::vector<int32_t>& out) const {
  auto hit = cache_.find(piece);
  if (hit != cache_.end()) {
    out.insert(out.end(), hit->second.begin(), hit->second.end());
    return;
  }
  std::vector<int32_t> syms;
  syms.reserve(piece.size());
  for (unsigned char c : piece) syms.push_back(byte_id_[c]);
  while (syms.size() > 1) {
    int32_t best_rank = INT32_MAX, best_id = -1;
    int32_t first = -1, second = -1;
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      const uint64_t key = (static_cast<uint64_t>(syms[i]) << 32) | static_cast<uint32_t>(syms[i + 1]);
      auto it = merges_.find(key);
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        best_id = it->second.second;
        first = syms[i];
        second = syms[i + 1];
      }
    }
    if (best_id < 0) break;
    std::vector<int32_t> next;
    next.reserve(syms.size());
    for (size_t i = 0; i < syms.size();) {
      if (i + 1 < syms.size() && syms[i] == first && syms[i + 1] == second) {
        next.push_back(best_id);
        i += 2;
      } else {
        next.push_back(syms[i]);
        ++i;
      }
    }
    syms.swap(next);
  }
  if (cache_.size() < (1u << 20)) cache_.emplace(piece, syms);
  out.insert(out.end(), syms.begin(), syms.end());
}

void Gpt2Tokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out, const std::string& what,
                                    size_t offset) const {
  std::vector<uint32_t> cps, offs;
  decode_utf8(text, cps, offs, what, offset);
  scan(cps, [&](size_t a, size_t b) { bpe(std::string(text.substr(offs[a], offs[b] - offs[a])), out); });
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text, bool allow_special, const std::string& what) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3);
  static const std::string_view kEot = "<|endoftext|>";
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t hit = allow_special && eot_id_ >= 0 ? text.find(kEot, pos) : std::string_view::npos;
    const size_t end = hit == std::string_view::npos ? text.size() : hit;
    encode_ordinary(text.substr(pos, end - pos), out, what, pos);
    if (hit == std::string_view::npos) break;
    out.push_back(eot_id_);
    pos = hit + kEot.size();
  }
  return out;
}

std::string Gpt2Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  std::vector<uint32_t> cps, offs;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) throw UserError("decode: token id " + std::to_string(id) + " is out of range");
    const std::string& tok = id_to_token_[id];
    if (id == eot_id_) {
      out += tok;
      continue;
    }
    decode_utf8(tok, cps, offs, "vocabulary token", 0);
    for (uint32_t cp : cps) {
      auto it = char_byte_.find(cp);
      if (it == char_byte_.end()) throw UserError("decode: token " + std::to_string(id) + " is not byte-level");
      out.push_back(static_cast<char>(it->second));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
namespace {
constexpr char kMagic[8] = {'E', 'F', 'F', 'T', 'O', 'K', '0', '1'};
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t dtype;  // 2 = uint16
  uint64_t count;
  char vocab_hash[64];
  char source_hash[64];
};
static_assert(sizeof(Header) == 152, "token cache header layout");
}  // namespace

std::vector<uint16_t> tokenize_file_cached(const Gpt2Tokenizer& tok, const std::string& path,
                                           const std::string& cache_dir, bool* rebuilt) {
  const std::string text = read_file(path, "text file");
  const std::string src_hash = sha256_hex(text);
  std::string base = path.substr(path.find_last_of('/') + 1);
  const std::string cache = cache_dir + "/" + base + "-" + src_hash.substr(0, 16) + "-" + tok.hash().substr(0, 16) + ".tok";
  if (files::exists(cache)) {
    std::string bytes = read_file(cache, "token cache");
    Header h{};
    if (bytes.size() >= sizeof(Header)) {
      std::memcpy(&h, bytes.data(), sizeof(Header));
      if (std::memcmp(h.magic, kMagic, 8) == 0 && h.version == 1 && h.dtype == 2 &&
          bytes.size() == sizeof(Header) + h.count * 2 && std::string(h.vocab_hash, 64) == tok.hash() &&
          std::string(h.source_hash, 64) == src_hash) {
        std::vector<uint16_t> ids(h.count);
        std::memcpy(ids.data(), bytes.data() + sizeof(Header), h.count * 2);
        if (rebuilt) *rebuilt = false;
        return ids;
      }
    }
  }
  if (tok.vocab_size() > 65536) throw UserError(path + ": vocabulary too large for the uint16 token cache");
  const auto ids32 = tok.encode(text, /*allow_special=*/true, path);
  std::vector<uint16_t> ids(ids32.begin(), ids32.end());
  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = 1;
  h.dtype = 2;
  h.count = ids.size();
  std::memcpy(h.vocab_hash, tok.hash().data(), 64);
  std::memcpy(h.source_hash, src_hash.data(), 64);
  std::string out(reinterpret_cast<const char*>(&h), sizeof(Header));
  out.append(reinterpret_cast<const char*>(ids.data()), ids.size() * 2);
  files::make_dirs(cache_dir);
  write_file_atomic(cache, out);
  if (rebuilt) *rebuilt = true;
  return ids;
}

}  // namespace efftrain::data

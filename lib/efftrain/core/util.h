// Small torch-free utilities: hashing, atomic file writes, string helpers, clocks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace efftrain {

// SHA-256, streaming: update() with bytes, then hex() once (64 lowercase hex characters).
class Sha256 {
 public:
  Sha256& update(std::string_view data);
  std::string hex();

 private:
  void block(const unsigned char* p);
  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char buf_[64] = {};
  size_t used_ = 0;
  uint64_t bytes_ = 0;
};
std::string sha256_hex(std::string_view data);
// SHA-256 of a file's bytes (read in 1 MiB pieces); UserError naming the file when unreadable.
std::string sha256_file(const std::string& path);

// Writes `contents` to `path` through a temporary file in the same folder, fsync and rename,
// so a reader never sees a half-written file. Throws std::runtime_error on I/O failure.
void write_file_atomic(const std::string& path, std::string_view contents);

// Reads a whole file; throws UserError naming the path when it cannot be read.
std::string read_file(const std::string& path, const std::string& what = "file");

// The byte offset of the first byte that is not part of well-formed UTF-8 (overlong forms,
// surrogates and code points above U+10FFFF included), or npos when `s` is valid.
std::size_t invalid_utf8_offset(std::string_view s);

// Edit distance, and the closest candidate within a small distance (empty when none is close).
std::size_t edit_distance(std::string_view a, std::string_view b);
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

std::string join(const std::vector<std::string>& parts, std::string_view sep);
// Bytes in GiB (2^30), for messages and tables.
inline double gib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024 * 1024); }
// The text before the first newline (a one-line message from a multi-line one).
std::string first_line(const std::string& s);

// UTC time as 2026-11-26T19:18:55Z, and a file-name-safe form 20261126T191855Z.
std::string utc_timestamp_iso(int64_t unix_seconds);
std::string utc_timestamp_compact(int64_t unix_seconds);
int64_t unix_time_now();

// Peak resident set size of this process in bytes.
int64_t peak_rss_bytes();

std::string hostname();

}  // namespace efftrain

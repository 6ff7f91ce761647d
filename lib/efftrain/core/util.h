// Small torch-free utilities: hashing, atomic file writes, string helpers, clocks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace efftrain {

// SHA-256 of bytes, as 64 lowercase hex characters.
std::string sha256_hex(std::string_view data);

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

// UTC time as 2026-11-26T19:18:55Z, and a file-name-safe form 20261126T191855Z.
std::string utc_timestamp_iso(int64_t unix_seconds);
std::string utc_timestamp_compact(int64_t unix_seconds);
int64_t unix_time_now();

// Peak resident set size of this process in bytes.
int64_t peak_rss_bytes();

std::string hostname();

}  // namespace efftrain

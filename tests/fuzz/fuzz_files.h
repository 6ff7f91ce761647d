// Shared by the fuzz targets: writing an input to a file quickly (no fsync or rename, unlike
// efftrain::write_file_atomic: a fuzzer writes one per execution).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace efftrain::fuzz {

inline void write_file(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
}

}  // namespace efftrain::fuzz

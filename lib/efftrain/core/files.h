// File-system operations on POSIX calls. Use these instead of std::filesystem's operations:
// libtorch.so (2.11 wheel) exports its own old copies of std::filesystem functions
// (remove_all, is_empty, create_directories, status, ...), and calls that bind to them can
// crash. Pure path arithmetic (std::filesystem::path, operator/, parent_path) is safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace efftrain::files {

bool exists(const std::string& path);
bool is_dir(const std::string& path);
// True for a directory with no entries (false when it is missing or not a directory).
bool is_empty_dir(const std::string& path);
// mkdir -p; throws std::runtime_error naming the path on failure.
void make_dirs(const std::string& path);
// rm -rf; a missing path is fine.
void remove_tree(const std::string& path);
void rename(const std::string& from, const std::string& to);
// fsync of a file or a folder (a folder: makes renames inside it durable).
void sync(const std::string& path);
// Has `write` create path.partial, flushes it to disk and renames it to `path`: a reader (or a
// kill at any moment) never sees a half-written file at `path`.
void write_through_partial(const std::string& path, const std::function<void(const std::string& tmp)>& write);
// Bytes of a file; -1 when it does not exist.
int64_t size_of(const std::string& path);
// The entry names of a folder, sorted (empty when it is missing).
std::vector<std::string> list_dir(const std::string& path);
// The absolute, normalized form (symlinks resolved when the path exists).
std::string absolute(const std::string& path);
// A new, empty folder under $TMPDIR (or /tmp) named prefix-XXXXXX.
std::string make_temp_dir(const std::string& prefix);

}  // namespace efftrain::files

// Test helpers: temporary folders, files, and running the built efftrain binary.
#pragma once

#include <functional>
#include <string>

namespace efftrain::test {

// A fresh folder under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // Writes `text` to path()/name (creating folders) and returns the full path.
  std::string write(const std::string& name, const std::string& text) const;

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs the efftrain binary with `args` (a shell-quoted string) from `cwd` (default: the
// source tree, so relative experiment paths work); `env` is prepended ("A=1 B=2").
CommandResult run_efftrain(const std::string& args, const std::string& cwd = EFFTRAIN_SOURCE_DIR,
                           const std::string& env = "");

std::string read_text(const std::string& path);
// The message of the UserError that `f` throws, or "(no error)".
std::string user_error_of(const std::function<void()>& f);
// The real data kept beside the checkout (../shared/data), or a copy under .data/data (the GPU
// machine), or $EFFTRAIN_SHARED_DATA; empty when none exists (tests that need it SKIP).
std::string shared_data_dir();
std::string source_path(const std::string& relative);

}  // namespace efftrain::test

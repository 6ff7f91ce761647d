#include "helpers.h"

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace efftrain::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  path_ = files::make_temp_dir("efftrain-test");
}

TempDir::~TempDir() {
  try {
    files::remove_tree(path_);
  } catch (...) {
  }
}

std::string TempDir::write(const std::string& name, const std::string& text) const {
  const fs::path p = fs::path(path_) / name;
  files::make_dirs(p.parent_path().string());
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string user_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string shared_data_dir() {
  std::vector<std::string> candidates;
  if (const char* e = std::getenv("EFFTRAIN_SHARED_DATA"); e && *e) candidates.push_back(e);
  candidates.push_back(source_path("../shared/data"));
  candidates.push_back(source_path(".data/data"));
  for (const auto& c : candidates)
    if (files::exists(c + "/gpt2/vocab.json")) return c;
  return "";
}

std::string source_path(const std::string& relative) {
  return std::string(EFFTRAIN_SOURCE_DIR) + "/" + relative;
}

CommandResult run_efftrain(const std::string& args, const std::string& cwd, const std::string& env) {
  TempDir io;
  const std::string out = io.file("stdout"), err = io.file("stderr");
  const std::string cmd = "cd '" + cwd + "' && " + env + " '" + std::string(EFFTRAIN_BIN) + "' " + args + " >'" + out +
                          "' 2>'" + err + "' </dev/null";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

}  // namespace efftrain::test

// Error types that decide efftrain's exit code (see apps/efftrain/main.cpp).
#pragma once

#include <stdexcept>
#include <string>

namespace efftrain {

// A mistake in what the user gave us: config, CLI, path, data file, checkpoint. Exit code 2.
// The message names the file (and key or byte offset), what was expected and what was found.
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Training ran but failed: diverged, NaN loss, required target not reached. Exit code 3.
class TrainingFailed : public std::runtime_error {
 public:
  TrainingFailed(std::string status, const std::string& message)
      : std::runtime_error(message), status_(std::move(status)) {}
  const std::string& status() const { return status_; }

 private:
  std::string status_;
};

namespace exit_code {
constexpr int kOk = 0;
constexpr int kInternal = 1;
constexpr int kUser = 2;
constexpr int kTrainingFailed = 3;
}  // namespace exit_code

}  // namespace efftrain

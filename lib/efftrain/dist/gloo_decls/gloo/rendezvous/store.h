// efftrain: declarations for ProcessGroupGloo.hpp only (see ../../README.md).
#pragma once
#include <chrono>
#include <string>
#include <vector>

namespace gloo::rendezvous {
// The base class of ProcessGroupGloo::GlooStore: the virtual functions that GlooStore overrides.
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& value) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) = 0;
};
}  // namespace gloo::rendezvous

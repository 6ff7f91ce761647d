// efftrain: declarations for ProcessGroupGloo.hpp only (see ../README.md).
#pragma once
#include <chrono>

namespace gloo {
// Held by pointer; ProcessGroupGloo::setTimeout (inline, never called by efftrain) names setTimeout.
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo

// Accumulation: how many micro-batches make the next optimizer step.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "efftrain/core/registry.h"

namespace efftrain {

class Accumulation {
 public:
  static constexpr const char* kKind = "accumulation";
  virtual ~Accumulation() = default;
  // Micro-batches for optimizer step `step` (1-based).
  virtual int64_t next_k(int64_t step) = 0;
  virtual nlohmann::json report() const = 0;
};

using AccumulationRegistry = Registry<Accumulation>;

}  // namespace efftrain

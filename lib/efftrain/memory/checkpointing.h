// Checkpointing: which model segments are recomputed during backward.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "efftrain/core/registry.h"

namespace efftrain {

class Checkpointing {
 public:
  static constexpr const char* kKind = "checkpointing";
  virtual ~Checkpointing() = default;
  // Indices of the model's blocks (0..num_blocks-1) that start a recomputed segment, and the
  // segment lengths; empty = nothing is checkpointed.
  virtual std::vector<std::pair<int64_t, int64_t>> segments(int64_t num_blocks) const = 0;
  virtual nlohmann::json report() const = 0;
};

using CheckpointingRegistry = Registry<Checkpointing>;

}  // namespace efftrain

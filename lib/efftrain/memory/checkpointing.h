// Checkpointing: which model segments are recomputed during backward.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "efftrain/core/registry.h"

namespace efftrain {

// What one block holds for backward, measured in a probe forward (allocator bytes gained
// across the block), and the size of its output (kept at a segment boundary anyway).
struct BlockMemory {
  int64_t activation_bytes = 0;
  int64_t output_bytes = 0;
};

// Activation memory of a forward + backward with `segments` recomputed, from the measured
// blocks: the larger of what forward keeps to its end (a recomputed segment keeps only its
// output) and, while backward recomputes a segment, what the blocks before it keep plus all of
// that segment's activations.
int64_t estimate_activation_peak(const std::vector<BlockMemory>& blocks,
                                 const std::vector<std::pair<int64_t, int64_t>>& segments);

// Extra forward FLOPs per example that recomputing `segments` costs, from each block's forward
// FLOPs per example.
double recompute_forward_flops(const std::vector<double>& block_flops,
                               const std::vector<std::pair<int64_t, int64_t>>& segments);

// budget placement: out of segments of `segment_size` blocks, checkpoint the fewest (largest
// saving first) that bring the activation memory -- what is kept, plus the largest segment
// recomputed in backward -- under `budget_bytes`. `met` says whether the budget was reached.
std::vector<std::pair<int64_t, int64_t>> select_budget_segments(const std::vector<BlockMemory>& blocks,
                                                               int64_t budget_bytes, int64_t segment_size,
                                                               bool* met = nullptr, int64_t* estimate = nullptr);

// sqrt_balanced placement: the `segments` contiguous segments (all recomputed) whose largest
// measured activation bytes is the smallest -- sqrt's segment count with the blocks shared out by
// bytes instead of by count (ResNet-50's first stage holds about half of all block activations).
std::vector<std::pair<int64_t, int64_t>> balanced_segments(const std::vector<BlockMemory>& blocks, int64_t segments);

// The number of segments sqrt makes of n blocks: ceil(n / ceil(sqrt(n))).
int64_t sqrt_segment_count(int64_t n);

class Checkpointing {
 public:
  static constexpr const char* kKind = "checkpointing";
  virtual ~Checkpointing() = default;
  // Indices of the model's blocks (0..num_blocks-1) that start a recomputed segment, and the
  // segment lengths; empty = nothing is checkpointed.
  virtual std::vector<std::pair<int64_t, int64_t>> segments(int64_t num_blocks) const = 0;
  // Placements that need the measured activation memory of each block say so here; the
  // engine then probes the model and calls segments_for().
  virtual bool needs_measurement() const { return false; }
  virtual std::vector<std::pair<int64_t, int64_t>> segments_for(const std::vector<BlockMemory>& measured) const {
    return segments(static_cast<int64_t>(measured.size()));
  }
  // Selective recompute inside the blocks and the head (Task::set_selective_recompute) instead
  // of, or besides, whole segments.
  virtual bool selective() const { return false; }
  virtual nlohmann::json report() const = 0;
};

using CheckpointingRegistry = Registry<Checkpointing>;

}  // namespace efftrain

// Activation checkpointing of one segment: forward runs without keeping the segment's inner
// activations; backward recomputes them, exactly: the CPU and CUDA RNG states of the forward
// are restored (dropout masks match) and the forward's autocast state is re-entered. State that
// a forward updates (BatchNorm's running statistics) is updated once, by the forward: modules
// that update state ask recomputing() and leave it alone in the recompute
// (models::batch_norm).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

namespace efftrain {

using SegmentFn = std::function<torch::Tensor(const torch::Tensor&)>;

// The default CPU generator's state and, for `dev` >= 0, the default CUDA generator's of that
// device. While a CUDA graph is being captured the CUDA state cannot be read: get_rng_state
// then leaves it out (dev -1). Shared by the recompute here, the step graph's warm-up and
// checkpoints.
struct RngState {
  torch::Tensor cpu, cuda;
  c10::DeviceIndex dev = -1;
};
RngState get_rng_state(c10::DeviceIndex dev);
void set_rng_state(const RngState& r);

// True on the thread that is recomputing a checkpointed segment in backward (inside a
// RecomputeScope).
bool recomputing();
struct RecomputeScope {
  RecomputeScope();
  ~RecomputeScope();
  RecomputeScope(const RecomputeScope&) = delete;
  RecomputeScope& operator=(const RecomputeScope&) = delete;

 private:
  bool outer_;
};

// `x` must require grad (it does after a stem or an embedding). Parameter gradients accumulate
// into .grad in backward (reentrant).
torch::Tensor checkpoint(SegmentFn fn, const torch::Tensor& x);

// Runs blocks 0..n-1 on x: each segment [first, first + count) in `segments` is recomputed in
// backward (when `training`); other blocks run plainly and are reported to `observer`
// (i, output) when one is set.
torch::Tensor run_blocks(int64_t n, const std::vector<std::pair<int64_t, int64_t>>& segments, bool training,
                         const std::function<torch::Tensor(int64_t, const torch::Tensor&)>& block,
                         const std::function<void(int64_t, const torch::Tensor&)>& observer, torch::Tensor x);

}  // namespace efftrain

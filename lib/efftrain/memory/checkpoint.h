// Activation checkpointing of one segment: forward runs without keeping the segment's inner
// activations; backward recomputes them, exactly: the CPU and CUDA RNG states of the forward
// are restored (dropout masks match), the forward's autocast state is re-entered, and the
// given buffers (BatchNorm running statistics) are put back after the recompute, so they are
// updated once per forward, as without checkpointing.
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

// `x` must require grad (it does after a stem or an embedding). `buffers` are restored after
// the recompute. Parameter gradients accumulate into .grad in backward (reentrant).
torch::Tensor checkpoint(SegmentFn fn, const torch::Tensor& x, std::vector<torch::Tensor> buffers);

// Runs blocks 0..n-1 on x: each segment [first, first + count) in `segments` is recomputed in
// backward (when `training`), with the buffers `buffers_of(first, count)` restored; other
// blocks run plainly and are reported to `observer` (i, output) when one is set.
torch::Tensor run_blocks(int64_t n, const std::vector<std::pair<int64_t, int64_t>>& segments, bool training,
                         const std::function<torch::Tensor(int64_t, const torch::Tensor&)>& block,
                         const std::function<std::vector<torch::Tensor>(int64_t, int64_t)>& buffers_of,
                         const std::function<void(int64_t, const torch::Tensor&)>& observer, torch::Tensor x);

}  // namespace efftrain

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

// `x` must require grad (it does after a stem or an embedding). `buffers` are restored after
// the recompute. Parameter gradients accumulate into .grad in backward (reentrant).
torch::Tensor checkpoint(SegmentFn fn, const torch::Tensor& x, std::vector<torch::Tensor> buffers);

}  // namespace efftrain

// ResNet's convolutions (no bias, one group, no dilation) with the weight's gradient routed by
// the function itself. Under autocast each convolution casts its fp32 weight (a kernel per
// convolution per forward), and in backward the cast's gradient is a copy to fp32 that
// AccumulateGrad then adds into .grad (two kernels more). Where the weight is one of a live
// ParamCasts' (param_casts.h) and current, conv2d takes that copy (one cast kernel for all the
// weights), and backward adds the fp16/bf16 weight gradient into the fp32 .grad in one kernel
// where kernels::grad_in_place holds (linear.h), else returns it cast to fp32 for autograd.
#pragma once

#include <torch/torch.h>

namespace efftrain::kernels {

// conv2d(x, w) with a square stride and padding. The function above on CUDA while gradients are
// taken, with fp16/bf16 autocast on and w an fp32 leaf that requires a gradient; else at::conv2d.
torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& w, int64_t stride, int64_t padding);

}  // namespace efftrain::kernels

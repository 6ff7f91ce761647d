// ResNet's convolutions (no bias, one group, no dilation) with the weight's gradient routed by
// the function itself. Under autocast each convolution casts its fp32 weight (a kernel per
// convolution per forward), and in backward the cast's gradient is a copy to fp32 that
// AccumulateGrad then adds into .grad (two kernels more). Where the weight is one of a live
// ParamCasts' (param_casts.h) and current, conv2d takes that copy (one cast kernel for all the
// weights), and backward adds the fp16/bf16 weight gradient into the fp32 .grad in one kernel
// where kernels::grad_in_place holds (linear.h), else returns it cast to fp32 for autograd.
#pragma once

#include <torch/torch.h>

#include "efftrain/kernels/bn_relu.h"

namespace efftrain::kernels {

// Whether conv2d takes the function above for x and w: CUDA, gradients taken, fp16/bf16 autocast
// on, w an fp32 leaf that requires a gradient.
bool routes_weight(const torch::Tensor& x, const torch::Tensor& w);
// Whether conv2d / conv1x1 with x, w and `src` keep the source instead of x (bn_relu.h): they
// route w, and src is x's, already in the run dtype and channels_last.
bool keeps_source(const torch::Tensor& x, const torch::Tensor& w, const BnReluSource& src);

// conv2d(x, w) with a square stride and padding: the function above where routes_weight(x, w),
// else at::conv2d.
// With `src` (x's BnReluSource, bn_relu.h) where the function routes: it keeps the source instead
// of x and remakes x in backward, just before the weight's gradient needs it.
torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& w, int64_t stride, int64_t padding,
                     const BnReluSource& src = {});

// A 1x1, stride-1 convolution of x [N, C, H, W] by w [K, C, 1, 1] (cuDNN's, as before) whose
// backward is matrix products over x's pixels in channels_last order (rows N*H*W of C): g w for
// x, and g^T x for w from weight_grad (added into w.grad by the product where grad_in_place
// holds: no cast and add kernels). With `pass_input`, the second output is x itself for another
// consumer (a bottleneck's shortcut), and backward adds the convolution's input gradient into that
// consumer's (the product with beta 1) instead of autograd adding the two in a kernel of its own.
// Under autocast it runs in autocast's dtype (w by param_cast). Any device; y and the input
// gradient are channels_last.
// `src` as conv2d's.
std::vector<torch::Tensor> conv1x1(const torch::Tensor& x, const torch::Tensor& w, bool pass_input,
                                   const BnReluSource& src = {});

}  // namespace efftrain::kernels

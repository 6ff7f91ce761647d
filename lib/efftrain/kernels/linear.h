// Linear layers for GPT's blocks and their helpers: y = x w^T + b through at::linear (cuBLAS adds
// the bias in the matmul's epilogue), with the bias gradient summed by the project's column-sum
// kernel (kernels/column_sums.cu) where it applies instead of ATen's reduction, and the weight
// gradient from weight_grad (below).
#pragma once

#include <torch/torch.h>

#include <array>

#include "efftrain/kernels/matmul.h"

namespace efftrain::kernels {

// at::linear(x, w, b), b undefined: no bias. GPT's linear layers and mlp's ATen path use it:
// at::linear, not the C++ frontend's Linear::forward / functional::linear, which for inputs of more
// than two dimensions run matmul and then `out += bias` as a broadcast add of its own (19.5 ms of a
// 96 ms GPT-2 small step at 32 x 1024 on an H200), where at::linear folds the batch dimensions and
// cuBLAS adds the bias in the matmul's epilogue, as PyTorch's nn.Linear does. While gradients are
// taken, on CUDA with fp16/bf16 activations (after autocast) and an output width a multiple of 8,
// a differentiable bias gets its gradient from bias_grad below and the weight from weight_grad;
// the matmuls are ATen's, the calls of at::linear's backward (the weight's with an fp32 output),
// or cuBLASLt's as `how` asks (matmul.h; forward too, with or without the function).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                     Matmul how = Matmul::aten);

// q, k, v [B, heads, T, D] of attention: x [B, T, C] through linear(x, w, b) ([B, T, 3C]),
// split in three and each viewed as [B, T, heads, D] and transposed. Where linear's backward is the
// project's (see above) and D is a multiple of 8, one function: backward writes the three
// gradients into the projection's [B x T, 3C] gradient and sums its columns (the bias gradient)
// in one pass of kernels/column_sums.cu, where autograd would concatenate them (a copy) and the
// bias gradient read the result again.
std::array<torch::Tensor, 3> qkv_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                        int64_t heads, Matmul how = Matmul::aten);

// The sums over rows of a [rows, width] matrix, in its dtype (fp32 accumulation): the project's
// kernel on CUDA for contiguous fp16/bf16 with width a multiple of 8, else ATen's sum(0).
torch::Tensor column_sums(const torch::Tensor& g);

// The gradient g^T x of a weight w [out, in] for a custom backward whose forward ran y = x w'^T
// with w' a cast of w (g [rows, out], x [rows, in], both in the run dtype, fp16/bf16 or w's).
// Where autograd would add it to w.grad -- a backward over the whole graph (no inputs named, as
// torch::autograd::grad and backward(inputs) name them; no create_graph) -- and w has a .grad of
// its own dtype, shape and layout already (train.cuda_graph's static gradients, or a later
// micro-batch of the step), the matmul adds it there in its epilogue (fp32 out of fp16/bf16
// inputs on CUDA: no half-precision product written, cast and added by three kernels) and the
// result is undefined: AccumulateGrad gets nothing to add, and its hooks (the gradient buckets')
// still run. Otherwise the product in w's dtype (computed in it, not rounded to the run dtype
// first) for autograd to accumulate. A weight of more dimensions ([out, in, 1, 1]: a 1x1
// convolution's, its memory one [out, in] matrix) gets the same product in its own shape. `how`:
// whose matmul on CUDA (matmul.h).
torch::Tensor weight_grad(const torch::Tensor& w, const torch::Tensor& g, const torch::Tensor& x,
                          Matmul how = Matmul::aten);
// The gradient of a bias b (the parameter itself) from its output's gradient g [rows, width]:
// the column sums of g, in b's dtype. On the column-sum kernel's terms (CUDA, fp16/bf16 g,
// contiguous, width a multiple of 8; b fp32 or g's dtype) the kernel's fp32 sums, added into
// b.grad (the result undefined) where grad_in_place(b) holds, as weight_grad does; else ATen's sum.
torch::Tensor bias_grad(const torch::Tensor& b, const torch::Tensor& g);
// Whether a custom backward running now may add w's gradient into w.grad itself (the conditions
// above, with the gradient computed on `device`).
// `any_layout`: for a caller that adds with ATen's ops, which take .grad in any strides (a
// channels_last convolution weight's); else .grad must be contiguous (a product's output).
bool grad_in_place(const torch::Tensor& w, const torch::Device& device, bool any_layout = false);

// The dtype a linear on x runs in: autocast's on CUDA where it is on, else x's.
at::ScalarType run_dtype(const torch::Tensor& x);
// autocast's cast of t to dt (cached for the weights, as at::linear's); undefined stays undefined.
torch::Tensor autocast_cast(at::ScalarType dt, const torch::Tensor& t);
// t (a parameter or a constant) in dt for a function that routes t's gradient itself: under
// autocast the current copy of a ParamCasts (param_casts.h) where t has one, else autocast_cast,
// detached either way.
torch::Tensor param_cast(at::ScalarType dt, const torch::Tensor& t);

}  // namespace efftrain::kernels

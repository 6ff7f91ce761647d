// Linear layers with their bias and GELU work in cuBLASLt's matmul epilogues (Apex's FusedDense
// and FusedDenseGeluDense, in efftrain's terms), differentiable:
// - dense: y = x w^T + b; backward computes the bias gradient in the weight-gradient matmul's
//   epilogue (BGRADB) instead of a separate column sum over the output gradient.
// - dense_gelu_dense: y = gelu_tanh(x w1^T + b1) w2^T + b2 (GPT-2's MLP). Forward writes the
//   GELU output and its input u in c_fc's epilogue (GELU_AUX_BIAS): no GELU kernel; backward
//   applies GELU's derivative and sums b1's gradient in the epilogue of the matmul that computes
//   the gradient of the GELU output (DGELU_BGRAD), and b2's as in dense.
// Where it applies -- CUDA, fp16 or bf16 after autocast, widths a multiple of 8, a build that
// found cuBLASLt -- the fused path runs; elsewhere ATen's linear and gelu (the same function).
// If cuBLASLt has no algorithm for one of the fused calls, that piece runs as ATen's ops (a
// warning, once). Numerics: the epilogue applies GELU to the fp32 accumulator before rounding,
// ATen to the rounded u, so fp16/bf16 results differ from the separate ops by rounding.
#pragma once

#include <torch/torch.h>

namespace efftrain::kernels {

// "cublaslt" or "aten": what dense / dense_gelu_dense run for an input like x (after autocast).
const char* dense_path(const torch::Tensor& x, int64_t in_features, int64_t out_features);

// x [..., in], w [out, in], b [out] or undefined.
torch::Tensor dense(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, bool use_fused = true);

// `keep_activation` false: gelu(u) is not kept for w2's gradient but recomputed from u in backward
// (checkpointing.policy selective).
torch::Tensor dense_gelu_dense(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                               const torch::Tensor& w2, const torch::Tensor& b2, bool keep_activation,
                               bool use_fused = true);

}  // namespace efftrain::kernels

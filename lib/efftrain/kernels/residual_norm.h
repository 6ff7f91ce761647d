// GPT's residual add + dropout + LayerNorm, differentiable: s = s_in + dropout(h, p) and
// y = layer_norm(s, weight, bias, eps). On CUDA, with the kernels built, fp32 s_in and a width
// of 128 x {1, 2, 3, 4, 6, 8, 10, 12, 16}: one fused kernel per direction (kernels/
// residual_norm.cu), y in h's dtype (under autocast the next matmul's input: no cast kernel),
// the dropout mask drawn again in backward instead of stored. Elsewhere ATen's ops in that
// order: the same function, and the same random draws as writing them out.
#pragma once

#include <torch/torch.h>

#include <utility>

namespace efftrain::kernels {

// What residual_layer_norm runs for these inputs: "fused_kernel" or "aten".
const char* residual_norm_path(const torch::Tensor& s_in, const torch::Tensor& h, const torch::Tensor& weight,
                               const torch::Tensor& bias);

// {s, y} for s_in [..., width] and h of its shape; p is applied only when `training`.
// `use_kernel` false: ATen's ops wherever it runs.
std::pair<torch::Tensor, torch::Tensor> residual_layer_norm(const torch::Tensor& s_in, const torch::Tensor& h,
                                                            const torch::Tensor& weight, const torch::Tensor& bias,
                                                            double p, bool training, double eps, bool use_kernel = true);

}  // namespace efftrain::kernels

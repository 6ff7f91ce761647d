// ResNet's BatchNorm followed by ReLU (and, at the end of a bottleneck, by the residual add before
// the ReLU): y = relu(batch_norm(x) [+ z]) with batch statistics, differentiable. Where it applies
// -- CUDA, fp16 or bf16 (cuDNN 9.19 took both on an H200), channels_last (NHWC), channels a
// multiple of 4, a build that found cuDNN -- one cuDNN kernel per direction does it
// (cudnnBatchNormalizationForwardTrainingEx / BackwardEx with bnOps BN_ACTIVATION or
// BN_ADD_ACTIVATION, the NHWC persistent kernels ATen's BatchNorm already runs, with the ReLU, the
// add and their gradients folded in). Elsewhere ATen's batch_norm, add and relu in that order, as
// after the first call cuDNN refuses (a warning says so). Same function either way: the
// statistics, the running-average update (momentum, unbiased variance) and the gradients are
// cuDNN's BatchNorm; in fp16/bf16 the fused kernel rounds its output once where the separate ops
// round after the BatchNorm and again after the add.
#pragma once

#include <torch/torch.h>

namespace efftrain::kernels {

// Whether bn_add_relu runs cuDNN's fused kernels for these inputs (z may be undefined).
bool bn_relu_fused(const torch::Tensor& x, const torch::Tensor& z);

// relu(batch_norm(x, weight, bias) + z) in training mode (z undefined: no add). running_mean /
// running_var undefined: batch statistics only, nothing updated (a checkpointed recompute).
// `use_fused` false: ATen's ops wherever it runs.
torch::Tensor bn_add_relu(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& weight,
                          const torch::Tensor& bias, const torch::Tensor& running_mean,
                          const torch::Tensor& running_var, double momentum, double eps, bool use_fused = true);

// batch_norm(x, weight, bias) alone in training mode, the same arguments: where bn_relu_fused(x, {})
// holds, cuDNN's BatchNorm Ex kernels with bnOps BN (ResNet's downsample shortcuts, whose
// BatchNorm has no ReLU after it: ATen runs its own channels-last kernels for bf16 there).
torch::Tensor bn(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                 const torch::Tensor& running_mean, const torch::Tensor& running_var, double momentum, double eps,
                 bool use_fused = true);

}  // namespace efftrain::kernels

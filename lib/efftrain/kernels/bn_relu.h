// ResNet's BatchNorm followed by ReLU (and, at the end of a bottleneck, by the residual add before
// the ReLU): y = relu(batch_norm(x) [+ z]) with batch statistics, differentiable, by one of:
// - BnKernels::cudnn: where it applies -- CUDA, fp16 or bf16 (cuDNN 9.19 took both on an H200),
//   channels_last (NHWC), channels a multiple of 4, a build that found cuDNN -- one cuDNN kernel
//   per direction (cudnnBatchNormalizationForwardTrainingEx / BackwardEx with bnOps BN_ACTIVATION
//   or BN_ADD_ACTIVATION, the NHWC persistent kernels ATen's BatchNorm already runs, with the
//   ReLU, the add and their gradients folded in; with the add cuDNN keeps a 1-bit ReLU mask per
//   element in its reserve space for backward).
// - BnKernels::efftrain: where it applies -- the same, with channels a power of two from 8 to 2048
//   and a build with the project's CUDA kernels -- kernels/bn.cu: three kernels per direction
//   (statistics, their column sums, the element-wise pass), no reserve space; elsewhere cuDNN's
//   as above.
// - otherwise (BnKernels::aten, or where neither applies): ATen's batch_norm, add and relu in that
//   order, as after the first call cuDNN refuses (a warning says so).
// Same function every way: the statistics (fp32 over the batch), the running-average update
// (momentum, unbiased variance) and the gradients are BatchNorm's; in fp16/bf16 the fused kernels
// round their output once where the separate ops round after the BatchNorm and again after the add.
#pragma once

#include <torch/torch.h>

namespace efftrain::kernels {

enum class BnKernels { aten, cudnn, efftrain };

// Whether cuDNN's fused kernels take these inputs (z may be undefined).
bool bn_relu_fused(const torch::Tensor& x, const torch::Tensor& z);
// What bn_add_relu / bn with `k` run for these inputs: "efftrain_fused", "cudnn_fused" or "aten".
std::string bn_kernel_name(BnKernels k, const torch::Tensor& x, const torch::Tensor& z);

// relu(batch_norm(x, weight, bias) + z) in training mode (z undefined: no add). running_mean /
// running_var undefined: batch statistics only, nothing updated (a checkpointed recompute).
torch::Tensor bn_add_relu(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& weight,
                          const torch::Tensor& bias, const torch::Tensor& running_mean,
                          const torch::Tensor& running_var, double momentum, double eps,
                          BnKernels k = BnKernels::cudnn);

// What a BatchNorm + ReLU's output y = relu(x * scale + shift) can be remade from: its input x and
// the statistics the project's forward kernel wrote ([4, C] fp32: mean, invstd, scale, shift; the
// BatchNorm's backward keeps both anyway). Undefined where y came another way.
struct BnReluSource {
  torch::Tensor x, stats;
  explicit operator bool() const { return x.defined(); }
};

// bn_add_relu without the add, and with BnKernels::efftrain where those kernels ran (gradients
// taken) what y can be remade from: a consumer that keeps the source instead of y (kernels::
// conv2d / conv1x1) holds no copy of its own of the activation.
std::pair<torch::Tensor, BnReluSource> bn_relu_remakable(const torch::Tensor& x, const torch::Tensor& weight,
                                                         const torch::Tensor& bias, const torch::Tensor& running_mean,
                                                         const torch::Tensor& running_var, double momentum,
                                                         double eps, BnKernels k);
// y again from its source, bit for bit (kernels/bn.cu's element-wise pass): NHWC, x's dtype.
torch::Tensor remake_bn_relu(const BnReluSource& src);

// batch_norm(x, weight, bias) alone in training mode, the same arguments and paths (cuDNN's with
// bnOps BN): ResNet's downsample shortcuts, whose BatchNorm has no ReLU after it (ATen runs its
// own channels-last kernels for bf16 there).
torch::Tensor bn(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                 const torch::Tensor& running_mean, const torch::Tensor& running_var, double momentum, double eps,
                 BnKernels k = BnKernels::cudnn);

}  // namespace efftrain::kernels

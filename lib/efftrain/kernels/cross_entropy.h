// Softmax cross-entropy of [rows, vocab] logits against [rows] int64 targets that keeps the
// logits in their own dtype: on CUDA one fused kernel per direction (kernels/cross_entropy.cu),
// elsewhere (CPU, or a build without nvcc) ATen on fp32 copies. Both compute the same function
// and accumulate in fp32.
#pragma once

#include <torch/torch.h>

#include <utility>

namespace efftrain::kernels {

// Whether this build has the CUDA kernels (CMake found nvcc).
bool built();

// What the row functions run for these logits: "fused_kernel" or "aten".
const char* cross_entropy_path(const torch::Tensor& logits);

// Per row: lse = log sum exp(logits) and loss = lse - logits[target], both fp32 [rows].
std::pair<torch::Tensor, torch::Tensor> cross_entropy_rows(const torch::Tensor& logits, const torch::Tensor& targets);
// dlogits = (softmax(logits) - onehot(targets)) * grad * scale, in the logits' dtype; `grad` is
// a one-element fp32 tensor (on the logits' device: no host synchronization). `dlogits` may be
// `logits` (written over).
void cross_entropy_rows_backward(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& lse,
                                 const torch::Tensor& grad, double scale, torch::Tensor& dlogits);

// cross_entropy_rows, then cross_entropy_rows_backward with grad 1 and `scale` written over the
// logits (contiguous): returns the per-row losses; the logits become (softmax - onehot) * scale.
// On CUDA one pass over the logits where two rows (or one) fit a block's shared memory (GPT-2's
// 50,304 in bf16 do).
torch::Tensor cross_entropy_rows_to_grad(torch::Tensor& logits, const torch::Tensor& targets, double scale = 1.0);

// The mean over rows, differentiable. On CUDA the fused kernels; `logits_dead`: the caller never
// reads `logits` again, so backward writes the gradient over them (saves one logits-sized
// buffer; that backward may then run only once). Elsewhere ATen's cross_entropy.
torch::Tensor cross_entropy_mean(const torch::Tensor& logits, const torch::Tensor& targets, bool logits_dead);

}  // namespace efftrain::kernels

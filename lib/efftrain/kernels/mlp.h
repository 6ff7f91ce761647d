// GPT-2's MLP, y = gelu_tanh(x w1^T + b1) w2^T + b2, differentiable, with the bias and GELU of
// the first matmul in cuBLASLt's epilogue (GELU_AUX_BIAS, as Apex's FusedDenseGeluDense): the
// matmul writes gelu(u) and u beside it, so no GELU kernel reads u back. Backward: ATen's matmuls,
// and GELU's derivative (from the kept u) with c_fc's bias gradient in one pass of
// kernels/column_sums.cu where nvcc built the kernels (else ATen's gelu_backward and column sum);
// mlp_proj's bias gradient from kernels::column_sums, the weights' from kernels::weight_grad (in
// their own dtype, added into their .grad in the matmul where it exists). Where it applies -- CUDA, fp16 or bf16 after autocast,
// widths a multiple of 8, a build that found cuBLASLt -- that path runs; elsewhere, and where
// cuBLASLt has no algorithm for the epilogue (a warning, once), ATen's linear and gelu: the same
// function. Numerics: the epilogue applies GELU to the fp32 accumulator before rounding, ATen to
// the rounded u, so fp16/bf16 outputs differ by rounding; in bf16 the backward's tanh is the
// hardware's approximation (relative error ~2^-11, below bf16's rounding).
// Measured on an H200 (GPT-2 small b32 x 1024 bf16, docs/results.md): the epilogue pays for
// GELU's forward kernel (1.5 ms of 68 per step) less a slower matmul (+0.9 ms). Two cuBLASLt
// epilogues did not pay and are not used: DGELU_BGRAD for the backward (a separate 7.6 ms kernel
// against ATen's 1.9 ms gelu_backward) and BGRADB for the bias gradients (no faster than ATen's
// column sums once the weight-gradient matmuls lost their split-K kernels).
#pragma once

#include <torch/torch.h>

#include "efftrain/kernels/matmul.h"

namespace efftrain::kernels {

// "cublaslt_epilogue" or "aten": what mlp runs for an input like x (after autocast) and these widths.
const char* mlp_path(const torch::Tensor& x, int64_t width, int64_t hidden);

// x [..., width], w1 [hidden, width], b1 [hidden], w2 [out, hidden], b2 [out] or undefined.
// `keep_activation` false: gelu(u) is not kept for w2's gradient but recomputed from u in
// backward (checkpointing.policy selective). `use_fused` false: ATen's ops wherever it runs.
// `how`: the fused path's matrix products (matmul.h; the epilogue's matmul through cuBLASLt in
// every mode, tuned with `tuned`).
torch::Tensor mlp(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                  const torch::Tensor& b2, bool keep_activation, bool use_fused = true, Matmul how = Matmul::aten);

}  // namespace efftrain::kernels

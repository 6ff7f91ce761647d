// The torch-facing wrappers' shared pieces (kernels/*.cpp, built with EFFTRAIN_WITH_KERNELS):
// the kernels' dtype code of a tensor, launch-error checks, the current CUDA stream.
#pragma once

#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "efftrain/kernels/launch.h"

namespace efftrain::kernels {

// fp32, fp16 or bf16 (the callers admit only these three).
inline DType dtype_of(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat: return DType::f32;
    case torch::kHalf: return DType::f16;
    default: return DType::bf16;
  }
}
inline bool kernel_dtype(const torch::Tensor& t) {
  const auto s = t.scalar_type();
  return s == torch::kFloat || s == torch::kHalf || s == torch::kBFloat16;
}
inline void check_launch(const char* err, const char* what) { TORCH_CHECK(err == nullptr, what, ": ", err); }
inline void* stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace efftrain::kernels

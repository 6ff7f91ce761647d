// The torch-facing wrappers' shared pieces (kernels/*.cpp, built with EFFTRAIN_WITH_KERNELS):
// the kernels' dtype code of a tensor, launch-error checks, the current CUDA stream, 16-byte
// alignment, where bias gradients go.
#pragma once

#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "efftrain/kernels/launch.h"
#include "efftrain/kernels/linear.h"

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
inline bool aligned16(const torch::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// Where a column-sum kernel over g puts the gradient of bias b (the parameter itself, fp32 or in
// g's dtype): added into b.grad where grad_in_place(b) holds (b fp32; the tensor returned is
// undefined), else into a new tensor in b's dtype, returned.
inline std::pair<SumsOut, torch::Tensor> bias_sums(const torch::Tensor& b, const torch::Tensor& g) {
  const bool f32 = b.scalar_type() == torch::kFloat;
  if (f32 && grad_in_place(b, g.device())) return {SumsOut{b.grad().data_ptr(), SumsOut::kAddF32}, torch::Tensor()};
  auto out = torch::empty({g.size(-1)}, g.options().dtype(f32 ? torch::kFloat : g.scalar_type()));
  return {SumsOut{out.data_ptr(), f32 ? SumsOut::kStoreF32 : SumsOut::kStore}, out};
}

}  // namespace efftrain::kernels

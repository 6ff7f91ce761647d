// Plain-pointer entry points of the project's CUDA kernels (*.cu, compiled by nvcc without
// LibTorch). Each launches on the given stream (a cudaStream_t) and returns null, or the CUDA
// error text of the launch. Built only where CMake finds nvcc (EFFTRAIN_WITH_KERNELS); the
// torch-facing wrappers beside them fall back to ATen otherwise.
#pragma once

#include <cstdint>

namespace efftrain::kernels {

enum class DType { f32, f16, bf16 };

// logits [rows, vocab] contiguous; targets [rows]; writes lse [rows] and loss [rows] (fp32).
const char* cross_entropy_forward(DType dtype, const void* logits, const int64_t* targets, int64_t rows,
                                  int64_t vocab, float* lse, float* loss, void* stream);
// dlogits = (softmax(logits) - onehot(targets)) * grad[0] * scale; dlogits may be logits.
const char* cross_entropy_backward(DType dtype, const void* logits, const int64_t* targets, const float* lse,
                                   const float* grad, float scale, int64_t rows, int64_t vocab, void* dlogits,
                                   void* stream);

}  // namespace efftrain::kernels

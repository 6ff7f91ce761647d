// Column sums of a [rows, width] matrix (the bias gradient of the matmul whose output gradient
// it is), optionally with GELU (tanh) backward computed on the way; compiled by nvcc without
// LibTorch headers (kernels/linear.cpp and kernels/mlp.cpp are the autograd side). One pass:
// each block sums 32 rows per column in fp32 (with GELU: gu = ga * gelu'(u) written in the
// storage type, its rounded values summed); a second, small kernel adds the blocks' sums per
// column, in a fixed order. ATen runs a reduction that reaches ~1.4 TB/s on an H100 for GPT-2's
// [32768, 768..2304] bias gradients, and with GELU, gelu_backward and then that reduction reading
// gu again.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "efftrain/kernels/common.cuh"
#include "efftrain/kernels/launch.h"

namespace efftrain::kernels {
namespace {

constexpr int kRowsPerBlock = 32;
constexpr int kMaxThreads = 1024;

// tanh(x): the hardware's approximation (MUFU.TANH, relative error ~2^-11) where the result is
// stored in bf16 (8 significant bits; the approximation stays below its rounding), else tanhf.
// tanhf's ~20 instructions per element made the GELU backward issue-bound on an H200: 2.7 TB/s
// for 7.2 GB per GPT-2 small step, with 24 warps per SM.
template <class T> __device__ __forceinline__ float tanh_for(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    float y;
    asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
  } else {
    return tanhf(x);
  }
}

// d/du of 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))), as ATen's GeluBackward (tanh) computes it.
template <class T> __device__ __forceinline__ float gelu_tanh_grad(float u) {
  constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
  constexpr float kKappa = 0.044715f;
  const float u2 = u * u;
  const float t = tanh_for<T>(kBeta * (u + kKappa * u2 * u));
  return 0.5f * (1.f + t) + 0.5f * u * (1.f - t * t) * kBeta * (1.f + 3.f * kKappa * u2);
}

// kGelu: ga and u in, gu written and summed; else ga summed (u, gu unused).
template <class T, bool kGelu>
__global__ void __launch_bounds__(kMaxThreads) block_sums_kernel(const T* __restrict__ ga, const T* __restrict__ u,
                                                                 int64_t rows, int64_t width, T* __restrict__ gu,
                                                                 float* __restrict__ partials) {
  constexpr int N = vec_of<T>();
  using P = Pack<T, N>;
  const int64_t vecs = width / N;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  const int64_t r1 = r0 + kRowsPerBlock < rows ? r0 + kRowsPerBlock : rows;
  const auto* pa = reinterpret_cast<const P*>(ga);
  const auto* pu = reinterpret_cast<const P*>(u);
  auto* po = reinterpret_cast<P*>(gu);
  for (int64_t c = threadIdx.x; c < vecs; c += blockDim.x) {
    float acc[N];
#pragma unroll
    for (int j = 0; j < N; ++j) acc[j] = 0.f;
#pragma unroll 4
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r * vecs + c;
      const P a = pa[i];
      if constexpr (kGelu) {
        const P x = pu[i];
        P o;
#pragma unroll
        for (int j = 0; j < N; ++j) {
          o.v[j] = from_f<T>(to_f(a.v[j]) * gelu_tanh_grad<T>(to_f(x.v[j])));
          acc[j] += to_f(o.v[j]);
        }
        po[i] = o;
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) acc[j] += to_f(a.v[j]);
      }
    }
    float* out = partials + static_cast<int64_t>(blockIdx.x) * width + c * N;
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = acc[j];
  }
}

// sums[c] = sum over b of partials[b, c], rounded to T (residual_norm.cu's column_sums_kernel, one output).
template <class T>
__global__ void __launch_bounds__(256) partial_sums_kernel(const float* __restrict__ partials, int64_t blocks,
                                                             int64_t width, T* __restrict__ sums) {
  __shared__ float acc[8][33];
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + tx;
  float s = 0.f;
  if (c < width)
    for (int64_t b = ty; b < blocks; b += 8) s += partials[b * width + c];
  acc[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && c < width) {
    float t = 0.f;
    for (int i = 0; i < 8; ++i) t += acc[i][tx];
    sums[c] = from_f<T>(t);
  }
}

template <class T, bool kGelu>
const char* launch(const void* ga, const void* u, int64_t rows, int64_t width, void* gu, float* partials, void* sums,
                   cudaStream_t s) {
  const int64_t blocks = column_sums_partials(rows, width) / width;
  const int64_t vecs = width / vec_of<T>();
  const int threads = static_cast<int>(vecs < kMaxThreads ? (vecs + 31) / 32 * 32 : kMaxThreads);
  block_sums_kernel<T, kGelu><<<static_cast<unsigned>(blocks), threads, 0, s>>>(
      static_cast<const T*>(ga), static_cast<const T*>(u), rows, width, static_cast<T*>(gu), partials);
  partial_sums_kernel<T><<<static_cast<unsigned>((width + 31) / 32), 256, 0, s>>>(partials, blocks, width,
                                                                                 static_cast<T*>(sums));
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace

int64_t column_sums_partials(int64_t rows, int64_t width) {
  return (rows + kRowsPerBlock - 1) / kRowsPerBlock * width;
}

const char* gelu_backward_sums(DType dtype, const void* ga, const void* u, int64_t rows, int64_t width, void* gu,
                               float* partials, void* sums, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::f16: return launch<__half, true>(ga, u, rows, width, gu, partials, sums, s);
    case DType::bf16: return launch<__nv_bfloat16, true>(ga, u, rows, width, gu, partials, sums, s);
    default: return "gelu_backward_sums: fp16 or bf16 only";
  }
}

const char* column_sums(DType dtype, const void* g, int64_t rows, int64_t width, float* partials, void* sums,
                        void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::f16: return launch<__half, false>(g, nullptr, rows, width, nullptr, partials, sums, s);
    case DType::bf16: return launch<__nv_bfloat16, false>(g, nullptr, rows, width, nullptr, partials, sums, s);
    default: return "column_sums: fp16 or bf16 only";
  }
}

}  // namespace efftrain::kernels

// Fused softmax cross-entropy over [rows, vocab] logits in their own dtype (fp32, fp16, bf16),
// compiled by nvcc without LibTorch headers (kernels/cross_entropy.cpp is the autograd side).
// Forward: one block per row, one pass: an online max / sum of exponentials in fp32 gives
// lse = log sum exp(x) and loss = lse - x[target]. Backward: one pass, read x and write
// dx = (exp(x - lse) - [j == target]) * grad * scale, in place over x when asked. No fp32 copy
// of the logits is ever made (the unfused path reads and writes about 60 GB for GPT-2 small at
// 32 x 1024 tokens; this one about 10 GB). Logits of -inf (vocabulary padding) get probability 0
// and gradient 0. A target outside [0, vocab) gives a NaN loss and no one-hot term.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "efftrain/kernels/common.cuh"
#include "efftrain/kernels/launch.h"

namespace efftrain::kernels {
namespace {

constexpr int kThreads = 512;

// (max, sum of exp(x - max)) pairs; -inf max means an empty sum.
struct MaxSum {
  float m, s;
};
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.f};
  const float sa = a.m == -INFINITY ? 0.f : a.s * expf(a.m - m);
  const float sb = b.m == -INFINITY ? 0.f : b.s * expf(b.m - m);
  return {m, sa + sb};
}

template <class T, bool kVec>
__global__ void __launch_bounds__(kThreads) ce_forward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                                                              int64_t vocab, float* __restrict__ lse_out,
                                                              float* __restrict__ loss_out) {
  const int64_t row = blockIdx.x;
  const T* x = logits + row * vocab;
  MaxSum acc{-INFINITY, 0.f};
  if constexpr (kVec) {
    constexpr int N = vec_of<T>();
    const auto* px = reinterpret_cast<const Pack<T, N>*>(x);
    for (int64_t i = threadIdx.x; i < vocab / N; i += kThreads) {
      const Pack<T, N> p = px[i];
      float v[N];
      float m = -INFINITY;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        v[j] = to_f(p.v[j]);
        m = fmaxf(m, v[j]);
      }
      if (m == -INFINITY) continue;
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < N; ++j) s += expf(v[j] - m);
      acc = combine(acc, {m, s});
    }
  } else {
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float v = to_f(x[i]);
      if (v == -INFINITY) continue;
      acc = combine(acc, {v, 1.f});
    }
  }
  // warp, then block reduction of the (max, sum) pairs
  for (int off = 16; off > 0; off >>= 1) {
    MaxSum o{__shfl_xor_sync(0xffffffffu, acc.m, off), __shfl_xor_sync(0xffffffffu, acc.s, off)};
    acc = combine(acc, o);
  }
  __shared__ MaxSum warp_acc[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_acc[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < kThreads / 32 ? warp_acc[lane] : MaxSum{-INFINITY, 0.f};
    for (int off = 16; off > 0; off >>= 1) {
      MaxSum o{__shfl_xor_sync(0xffffffffu, acc.m, off), __shfl_xor_sync(0xffffffffu, acc.s, off)};
      acc = combine(acc, o);
    }
    if (lane == 0) {
      const float lse = acc.m + logf(acc.s);
      const int64_t t = targets[row];
      lse_out[row] = lse;
      loss_out[row] = (t >= 0 && t < vocab) ? lse - to_f(x[t]) : NAN;
    }
  }
}

template <class T, bool kVec>
__global__ void __launch_bounds__(kThreads) ce_backward_kernel(const T* logits, const int64_t* __restrict__ targets,
                                                               const float* __restrict__ lse, const float* __restrict__ grad,
                                                               float scale, int64_t vocab, T* dlogits) {
  const int64_t row = blockIdx.x;
  const T* x = logits + row * vocab;
  T* dx = dlogits + row * vocab;
  const float l = lse[row];
  const float g = grad[0] * scale;
  const int64_t t = targets[row];
  if constexpr (kVec) {
    constexpr int N = vec_of<T>();
    const auto* px = reinterpret_cast<const Pack<T, N>*>(x);
    auto* pdx = reinterpret_cast<Pack<T, N>*>(dx);
    for (int64_t i = threadIdx.x; i < vocab / N; i += kThreads) {
      const Pack<T, N> p = px[i];
      Pack<T, N> o;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const int64_t col = i * N + j;
        const float prob = expf(to_f(p.v[j]) - l);
        o.v[j] = from_f<T>((prob - (col == t ? 1.f : 0.f)) * g);
      }
      pdx[i] = o;
    }
  } else {
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float prob = expf(to_f(x[i]) - l);
      dx[i] = from_f<T>((prob - (i == t ? 1.f : 0.f)) * g);
    }
  }
}

template <class T> bool vectorizable(const void* a, const void* b, int64_t vocab) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return vocab % vec_of<T>() == 0 && aligned(a) && aligned(b);
}

template <class T>
void forward_t(const void* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* lse, float* loss,
               cudaStream_t stream) {
  const auto* x = static_cast<const T*>(logits);
  if (vectorizable<T>(x, x, vocab))
    ce_forward_kernel<T, true><<<rows, kThreads, 0, stream>>>(x, targets, vocab, lse, loss);
  else
    ce_forward_kernel<T, false><<<rows, kThreads, 0, stream>>>(x, targets, vocab, lse, loss);
}

template <class T>
void backward_t(const void* logits, const int64_t* targets, const float* lse, const float* grad, float inv,
                int64_t rows, int64_t vocab, void* dlogits, cudaStream_t stream) {
  const auto* x = static_cast<const T*>(logits);
  auto* dx = static_cast<T*>(dlogits);
  if (vectorizable<T>(x, dx, vocab))
    ce_backward_kernel<T, true><<<rows, kThreads, 0, stream>>>(x, targets, lse, grad, inv, vocab, dx);
  else
    ce_backward_kernel<T, false><<<rows, kThreads, 0, stream>>>(x, targets, lse, grad, inv, vocab, dx);
}

}  // namespace

const char* cross_entropy_forward(DType dtype, const void* logits, const int64_t* targets, int64_t rows, int64_t vocab,
                                  float* lse, float* loss, void* stream) {
  if (rows == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::f32: forward_t<float>(logits, targets, rows, vocab, lse, loss, s); break;
    case DType::f16: forward_t<__half>(logits, targets, rows, vocab, lse, loss, s); break;
    case DType::bf16: forward_t<__nv_bfloat16>(logits, targets, rows, vocab, lse, loss, s); break;
  }
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

const char* cross_entropy_backward(DType dtype, const void* logits, const int64_t* targets, const float* lse,
                                   const float* grad, float scale, int64_t rows, int64_t vocab, void* dlogits,
                                   void* stream) {
  if (rows == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::f32: backward_t<float>(logits, targets, lse, grad, scale, rows, vocab, dlogits, s); break;
    case DType::f16: backward_t<__half>(logits, targets, lse, grad, scale, rows, vocab, dlogits, s); break;
    case DType::bf16: backward_t<__nv_bfloat16>(logits, targets, lse, grad, scale, rows, vocab, dlogits, s); break;
  }
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace efftrain::kernels

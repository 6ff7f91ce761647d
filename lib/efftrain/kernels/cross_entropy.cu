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

#include <atomic>
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

// One 16-byte copy from global to shared memory that holds no registers (cp.async).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}

// The block's reduction of v by op (max or +); every thread gets the result.
template <class Op> __device__ __forceinline__ float block_reduce(float v, Op op, float* scratch) {
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // scratch may still be read by the previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) v = op(v, scratch[w]);
  return v;
}

// Forward and backward in one pass, for the classifier whose gradient is taken in forward: the
// row is copied once into shared memory (cp.async, 16 bytes at a time, no registers held), its
// max and sum of exponentials come from there, and the gradient is written over the row in
// global memory. Reads the logits from HBM once instead of twice (the two kernels above).
// Needs vocab * sizeof(T) of dynamic shared memory; the caller checks it fits.
template <class T>
__global__ void __launch_bounds__(kThreads) ce_fused_kernel(T* logits, const int64_t* __restrict__ targets,
                                                            const float* __restrict__ grad, float scale, int64_t vocab,
                                                            float* __restrict__ lse_out, float* __restrict__ loss_out) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float scratch[kThreads / 32];
  constexpr int N = vec_of<T>();
  using P = Pack<T, N>;
  const int64_t row = blockIdx.x, vecs = vocab / N;
  T* x = logits + row * vocab;
  auto* xs = reinterpret_cast<P*>(smem);
  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) cp_async16(xs + i, reinterpret_cast<const P*>(x) + i);
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
  __syncthreads();
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) {
    const P p = xs[i];
#pragma unroll
    for (int j = 0; j < N; ++j) m = fmaxf(m, to_f(p.v[j]));
  }
  m = block_reduce(m, [](float a, float b) { return fmaxf(a, b); }, scratch);
  float s = 0.f;
  if (m != -INFINITY)
    for (int64_t i = threadIdx.x; i < vecs; i += kThreads) {
      const P p = xs[i];
#pragma unroll
      for (int j = 0; j < N; ++j) s += expf(to_f(p.v[j]) - m);
    }
  s = block_reduce(s, [](float a, float b) { return a + b; }, scratch);
  const float lse = m + logf(s);
  const int64_t t = targets[row];
  if (threadIdx.x == 0) {
    lse_out[row] = lse;
    loss_out[row] = (t >= 0 && t < vocab) ? lse - to_f(reinterpret_cast<const T*>(smem)[t]) : NAN;
  }
  const float g = grad[0] * scale;
  auto* px = reinterpret_cast<P*>(x);
  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) {
    const P p = xs[i];
    P o;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const int64_t col = i * N + j;
      o.v[j] = from_f<T>((expf(to_f(p.v[j]) - lse) - (col == t ? 1.f : 0.f)) * g);
    }
    px[i] = o;
  }
}

// The dynamic shared memory one block of ce_fused_kernel may take on the current device (the
// opt-in limit less its static scratch), read once per device; 0 if unknown.
int64_t max_dynamic_shared() {
  static std::atomic<int64_t> kept[64];
  return per_device(kept, [](int dev) -> int64_t {
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) return 0;
    return v - static_cast<int64_t>(sizeof(float)) * (kThreads / 32);
  });
}

// Whether ce_fused_kernel<T> takes these logits; raises its limit to max_dynamic_shared() once
// per device (a host-side setting, not a stream operation: nothing for graph capture to record).
template <class T> bool fused_fits(const void* logits, int64_t vocab) {
  if (vocab % vec_of<T>() != 0 || reinterpret_cast<uintptr_t>(logits) % 16 != 0) return false;
  const int64_t limit = max_dynamic_shared();
  if (vocab * static_cast<int64_t>(sizeof(T)) > limit) return false;
  static std::atomic<int64_t> raised[64];  // 1 once the attribute is set on that device
  return per_device(raised, [limit](int) -> int64_t {
    return cudaFuncSetAttribute(ce_fused_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(limit)) == cudaSuccess;
  }) != 0;
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

template <class T>
void forward_grad_t(void* logits, const int64_t* targets, const float* grad, float scale, int64_t rows, int64_t vocab,
                    float* lse, float* loss, cudaStream_t stream) {
  if (fused_fits<T>(logits, vocab)) {
    const auto bytes = static_cast<size_t>(vocab) * sizeof(T);
    ce_fused_kernel<T><<<rows, kThreads, bytes, stream>>>(static_cast<T*>(logits), targets, grad, scale, vocab, lse, loss);
    return;
  }
  forward_t<T>(logits, targets, rows, vocab, lse, loss, stream);
  backward_t<T>(logits, targets, lse, grad, scale, rows, vocab, logits, stream);
}

}  // namespace

const char* cross_entropy_forward(DType dtype, const void* logits, const int64_t* targets, int64_t rows, int64_t vocab,
                                  float* lse, float* loss, void* stream) {
  if (rows == 0) return nullptr;
  with_dtype(dtype, [&](auto t) {
    forward_t<decltype(t)>(logits, targets, rows, vocab, lse, loss, static_cast<cudaStream_t>(stream));
  });
  return launched();
}

const char* cross_entropy_backward(DType dtype, const void* logits, const int64_t* targets, const float* lse,
                                   const float* grad, float scale, int64_t rows, int64_t vocab, void* dlogits,
                                   void* stream) {
  if (rows == 0) return nullptr;
  with_dtype(dtype, [&](auto t) {
    const auto s = static_cast<cudaStream_t>(stream);
    backward_t<decltype(t)>(logits, targets, lse, grad, scale, rows, vocab, dlogits, s);
  });
  return launched();
}

const char* cross_entropy_forward_grad(DType dtype, void* logits, const int64_t* targets, const float* grad,
                                       float scale, int64_t rows, int64_t vocab, float* lse, float* loss,
                                       void* stream) {
  if (rows == 0) return nullptr;
  with_dtype(dtype, [&](auto t) {
    const auto s = static_cast<cudaStream_t>(stream);
    forward_grad_t<decltype(t)>(logits, targets, grad, scale, rows, vocab, lse, loss, s);
  });
  return launched();
}

}  // namespace efftrain::kernels

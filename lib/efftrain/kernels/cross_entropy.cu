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

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>

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
__device__ __forceinline__ MaxSum warp_combine(MaxSum acc) {
  for (int off = 16; off > 0; off >>= 1)
    acc = combine(acc, {__shfl_xor_sync(0xffffffffu, acc.m, off), __shfl_xor_sync(0xffffffffu, acc.s, off)});
  return acc;
}
// The block's pair from every thread's `acc` (warps, then warp 0 over the warps' pairs), returned
// to every thread. warp_acc: one pair per warp in shared memory; its first entry is read after the
// last barrier here, so it must not be written again before another barrier.
__device__ __forceinline__ MaxSum block_combine(MaxSum acc, MaxSum* warp_acc) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  acc = warp_combine(acc);
  if (lane == 0) warp_acc[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = warp_combine(lane < static_cast<int>(blockDim.x / 32) ? warp_acc[lane] : MaxSum{-INFINITY, 0.f});
    if (lane == 0) warp_acc[0] = acc;
  }
  __syncthreads();
  return warp_acc[0];
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
  __shared__ MaxSum warp_acc[kThreads / 32];
  acc = block_combine(acc, warp_acc);
  if (threadIdx.x == 0) {
    const float lse = acc.m + logf(acc.s);
    const int64_t t = targets[row];
    lse_out[row] = lse;
    loss_out[row] = (t >= 0 && t < vocab) ? lse - to_f(x[t]) : NAN;
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
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most `Pending` of this thread's committed groups are still in flight.
template <int Pending> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

// exp(x - shift), given shift and shift * log2(e). fp32 logits: expf, as the two kernels above.
// fp16/bf16 logits, whose gradient is rounded to 8 or 11 bits: the special-function unit's 2^x
// (ex2.approx, relative error ~2^-22) on one fma, without expf's more exact range reduction.
constexpr float kLog2e = 1.4426950408889634f;
template <class T> __device__ __forceinline__ float exp_shifted(float x, float shift, float shift_log2e) {
  if constexpr (sizeof(T) == 4) {
    return expf(x - shift);
  } else {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(fmaf(x, kLog2e, -shift_log2e)));
    return r;
  }
}

// o.v[j], o.v[j + 1] = a, b rounded to T; one packed conversion for the half types.
template <class T, int N> __device__ __forceinline__ void set_pair(Pack<T, N>& o, int j, float a, float b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    *reinterpret_cast<__nv_bfloat162*>(&o.v[j]) = __floats2bfloat162_rn(a, b);
  } else if constexpr (std::is_same_v<T, __half>) {
    *reinterpret_cast<__half2*>(&o.v[j]) = __floats2half2_rn(a, b);
  } else {
    o.v[j] = a;
    o.v[j + 1] = b;
  }
}

// p's elements in fp32 (bf16: each pair of a 32-bit word by one shift and one mask).
template <class T, int N> __device__ __forceinline__ void unpack(const Pack<T, N>& p, float (&v)[N]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const auto* w = reinterpret_cast<const unsigned*>(p.v);
#pragma unroll
    for (int j = 0; j < N / 2; ++j) {
      v[2 * j] = __uint_as_float(w[j] << 16);
      v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = to_f(p.v[j]);
  }
}

// The static shared memory of ce_fused_kernel: one (max, sum) pair per warp.
struct FusedScratch {
  MaxSum warp[32];
};

// Forward and backward in one pass, for the classifier whose gradient is taken in forward. Each
// block keeps `Stages` rows of logits in shared memory and walks rows blockIdx.x, + gridDim.x, ...:
// while it works on one row, the next is on its way in (cp.async, 16 bytes at a time, no registers
// held), so the copy in, the exponentials and the gradient's stores out overlap (one row at a time
// left them in turn, ~60% of the memory's bandwidth for GPT-2). Per row: one pass over shared
// memory for the (max, sum of exponentials) pair (online: the sum rescaled when a larger max
// comes), lse = max + log(sum) and loss = lse - x[target], then one pass writing
// dx = (exp(x - lse) - [j == target]) * grad * scale over the row in global memory (fp16/bf16
// with grad * scale > 0: exp(x - lse + log(grad * scale)), one multiplication less). Reads the
// logits from HBM once, writes the gradient once. Needs Stages * vocab * sizeof(T) of dynamic
// shared memory and vocab % vec_of<T>() == 0 (the caller checks both; the first bounds vocab / N
// far below 2^31).
template <class T, int Stages>
__global__ void __launch_bounds__(1024) ce_fused_kernel(T* logits, const int64_t* __restrict__ targets,
                                                        const float* __restrict__ grad, float scale, int64_t rows,
                                                        int64_t vocab, float* __restrict__ lse_out,
                                                        float* __restrict__ loss_out) {
  static_assert(Stages == 1 || Stages == 2, "one or two row buffers");
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ FusedScratch scratch;
  constexpr int N = vec_of<T>();
  constexpr bool kFast = sizeof(T) == 2;  // exp_shifted's 2^x path
  using P = Pack<T, N>;
  const int vecs = static_cast<int>(vocab / N);
  const int tid = threadIdx.x, step = blockDim.x;
  P* const buffers = reinterpret_cast<P*>(smem);
  const auto fetch = [&](int64_t row, P* to) {
    const auto* from = reinterpret_cast<const P*>(logits + row * vocab);
    for (int i = tid; i < vecs; i += step) cp_async16(to + i, from + i);
  };
  const float g = grad[0] * scale;
  // log2(g) where exp(x - lse) * g may be taken as 2^(x log2(e) - lse log2(e) + log2(g))
  const bool fold = kFast && g > 0.f && g < INFINITY;
  const float gL = fold ? log2f(g) : 0.f;
  if (Stages > 1 && blockIdx.x < rows) fetch(blockIdx.x, buffers);
  cp_async_commit();
  int k = 0;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x, ++k) {
    const P* xs = buffers + (Stages > 1 && (k & 1) ? vecs : 0);
    const int64_t t = targets[row];  // read now: its latency hides behind the wait and the first pass
    if constexpr (Stages > 1) {
      // the next row into the other buffer, whose last reader finished at the loop's end
      if (row + gridDim.x < rows) fetch(row + gridDim.x, buffers + ((k & 1) ? 0 : vecs));
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      fetch(row, buffers);
      cp_async_commit();
      cp_async_wait<0>();
    }
    __syncthreads();
    // (max, sum of exp(x - max)) of this thread's elements, then of the block's
    MaxSum acc{-INFINITY, 0.f};
#pragma unroll 2
    for (int i = tid; i < vecs; i += step) {
      float v[N];
      unpack(xs[i], v);
      float pm = v[0];
#pragma unroll
      for (int j = 1; j < N; ++j) pm = fmaxf(pm, v[j]);
      if (pm > acc.m) {
        acc.s *= exp_shifted<T>(acc.m, pm, pm * kLog2e);
        acc.m = pm;
      }
      if (acc.m == -INFINITY) continue;
      const float mL = acc.m * kLog2e;
#pragma unroll
      for (int j = 0; j < N; ++j) acc.s += exp_shifted<T>(v[j], acc.m, mL);
    }
    acc = block_combine(acc, scratch.warp);
    const float lse = acc.m + logf(acc.s), lseL = lse * kLog2e;
    const bool t_in = t >= 0 && t < vocab;
    if (tid == 0) {
      lse_out[row] = lse;
      loss_out[row] = t_in ? lse - to_f(reinterpret_cast<const T*>(xs)[t]) : NAN;
    }
    const int t_vec = t_in ? static_cast<int>(t / N) : -1;
    auto* px = reinterpret_cast<P*>(logits + row * vocab);
    const float shiftL = lseL - gL;  // fold: 2^(x log2(e) - shiftL) = exp(x - lse) * g
#pragma unroll 2
    for (int i = tid; i < vecs; i += step) {
      float v[N];
      unpack(xs[i], v);
      P o;
      if (i == t_vec) {  // the target's pack: the one-hot term
        const int tj = static_cast<int>(t - static_cast<int64_t>(i) * N);
#pragma unroll
        for (int j = 0; j < N; j += 2)
          set_pair(o, j, (exp_shifted<T>(v[j], lse, lseL) - (j == tj ? 1.f : 0.f)) * g,
                   (exp_shifted<T>(v[j + 1], lse, lseL) - (j + 1 == tj ? 1.f : 0.f)) * g);
      } else if (fold) {
#pragma unroll
        for (int j = 0; j < N; j += 2)
          set_pair(o, j, exp_shifted<T>(v[j], lse, shiftL), exp_shifted<T>(v[j + 1], lse, shiftL));
      } else {
#pragma unroll
        for (int j = 0; j < N; j += 2)
          set_pair(o, j, exp_shifted<T>(v[j], lse, lseL) * g, exp_shifted<T>(v[j + 1], lse, lseL) * g);
      }
      px[i] = o;
    }
    __syncthreads();  // every read of this buffer done before it is filled again
  }
  cp_async_wait<0>();
}

// The dynamic shared memory one block of ce_fused_kernel may take on the current device (the
// opt-in limit less its static scratch), read once per device; 0 if unknown.
int64_t max_dynamic_shared() {
  static std::atomic<int64_t> kept[64];
  return per_device(kept, [](int dev) -> int64_t {
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) return 0;
    return v - static_cast<int64_t>(sizeof(FusedScratch));
  });
}

// Launches ce_fused_kernel<T, Stages> over `rows` rows if its shared memory fits the device and
// its limit could be raised (a host-side setting, not a stream operation: nothing for graph
// capture to record); false, and nothing launched, otherwise. Blocks: as many as the device holds
// at once (each walks its rows), 128 to 1024 threads, ~4 vectors of a row per thread.
template <class T, int Stages>
bool launch_fused(T* logits, const int64_t* targets, const float* grad, float scale, int64_t rows, int64_t vocab,
                  float* lse, float* loss, cudaStream_t stream) {
  const int64_t bytes = Stages * vocab * static_cast<int64_t>(sizeof(T)), limit = max_dynamic_shared();
  if (bytes > limit) return false;
  static std::atomic<int64_t> raised[64];  // 1 once the attribute is set on that device
  const auto kernel = ce_fused_kernel<T, Stages>;
  if (per_device(raised, [kernel, limit](int) -> int64_t {
        return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(limit)) ==
               cudaSuccess;
      }) == 0)
    return false;
  const int64_t vecs = vocab / vec_of<T>();
  const int threads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(128, (vecs / 4 + 31) / 32 * 32)));
  const int64_t per_sm = blocks_per_sm(kernel, threads, static_cast<size_t>(bytes));
  if (per_sm == 0) return false;
  const int64_t blocks = std::min<int64_t>(rows, std::max<int64_t>(1, sm_count()) * per_sm);
  kernel<<<static_cast<unsigned>(blocks), threads, static_cast<size_t>(bytes), stream>>>(logits, targets, grad, scale,
                                                                                         rows, vocab, lse, loss);
  return true;
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
  auto* x = static_cast<T*>(logits);
  if (vocab % vec_of<T>() == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0 &&
      (launch_fused<T, 2>(x, targets, grad, scale, rows, vocab, lse, loss, stream) ||
       launch_fused<T, 1>(x, targets, grad, scale, rows, vocab, lse, loss, stream)))
    return;
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

// Column sums of a [rows, width] matrix (the bias gradient of the matmul whose output gradient
// it is), optionally with GELU (tanh) backward computed on the way, or with the matrix gathered
// from attention's q/k/v gradients (the projection's gradient, written out); compiled by nvcc without
// LibTorch headers (kernels/linear.cpp and kernels/mlp.cpp are the autograd side). One pass:
// each block of one wave sums its chunks of 32 rows per column in fp32 (with GELU: gu = ga *
// gelu'(u) written in the storage type, its rounded values summed); a second, small kernel adds
// the blocks' sums per column, in a fixed order, and writes or adds them (SumsOut). ATen runs a reduction that reaches ~1.4 TB/s on an H100 for GPT-2's
// [32768, 768..2304] bias gradients, and with GELU, gelu_backward and then that reduction reading
// gu again.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
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

// Where block_sums_kernel's values come from: column(c) gives the reader of vector column c (N
// consecutive columns), whose load(r) returns row r's N values, the ones summed (and stored
// where an output is given).
template <class T> struct Plain {  // g [rows, width] contiguous, summed only
  using P = Pack<T, vec_of<T>()>;
  static constexpr bool kStores = false;
  const P* g;
  int64_t vecs;
  struct Column {
    const P* p;
    int64_t vecs;
    __device__ P load(int64_t r) const { return p[r * vecs]; }
  };
  __device__ Column column(int64_t c) const { return {g + c, vecs}; }
};

template <class T> struct GeluBackward {  // ga * gelu'(u), both [rows, width] contiguous
  using P = Pack<T, vec_of<T>()>;
  static constexpr bool kStores = true;
  const P* ga;
  const P* u;
  int64_t vecs;
  struct Column {
    const P *a, *x;
    int64_t vecs;
    __device__ P load(int64_t r) const {
      const P av = a[r * vecs], xv = x[r * vecs];
      P o;
#pragma unroll
      for (int j = 0; j < vec_of<T>(); ++j) o.v[j] = from_f<T>(to_f(av.v[j]) * gelu_tanh_grad<T>(to_f(xv.v[j])));
      return o;
    }
  };
  __device__ Column column(int64_t c) const { return {ga + c, u + c, vecs}; }
};

template <class T> struct QkvGather {  // row b * seq + t, column s * C + h * D + d <- parts[s][b, h, t, d]
  using P = Pack<T, vec_of<T>()>;
  static constexpr bool kStores = true;
  QkvParts parts;
  struct Column {
    const T* p;
    int64_t sb, st, seq;
    __device__ P load(int64_t r) const {
      return *reinterpret_cast<const P*>(p + (r / seq) * sb + (r % seq) * st);
    }
  };
  __device__ Column column(int64_t c) const {
    const int64_t col = c * vec_of<T>(), C = parts.heads * parts.head_dim;
    const int s = static_cast<int>(col / C);
    const int64_t h = (col % C) / parts.head_dim, d = col % parts.head_dim;
    const auto* base = static_cast<const T*>(s == 0 ? parts.p[0] : s == 1 ? parts.p[1] : parts.p[2]);
    return {base + h * parts.stride_h[s] + d, parts.stride_b[s], parts.stride_t[s], parts.seq};
  }
};

// The rows in chunks of kRowsPerBlock; block b takes chunks b, b + gridDim.x, ... (one wave of
// blocks: the grid is what the device holds at once, so no partly filled last wave -- with a
// block per chunk, GPT-2 small's [32768, 2304] q/k/v gradient took 1024 blocks where 924 fit).
// Each thread takes vector columns c, c + blockDim.x, ..., loads the block's rows of them from
// `src`, stores them to `out` ([rows, width] contiguous) where the source says so, and writes
// their fp32 sums to partials[block, columns].
template <class T, class Src>
__global__ void __launch_bounds__(kMaxThreads) block_sums_kernel(Src src, int64_t rows, int64_t width,
                                                                 T* __restrict__ out, float* __restrict__ partials) {
  constexpr int N = vec_of<T>();
  using P = Pack<T, N>;
  const int64_t vecs = width / N;
  auto* po = reinterpret_cast<P*>(out);
  for (int64_t c = threadIdx.x; c < vecs; c += blockDim.x) {
    const auto col = src.column(c);
    float acc[N];
#pragma unroll
    for (int j = 0; j < N; ++j) acc[j] = 0.f;
    for (int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock; r0 < rows;
         r0 += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
      const int64_t r1 = r0 + kRowsPerBlock < rows ? r0 + kRowsPerBlock : rows;
#pragma unroll 4
      for (int64_t r = r0; r < r1; ++r) {
        const P o = col.load(r);
#pragma unroll
        for (int j = 0; j < N; ++j) acc[j] += to_f(o.v[j]);
        if constexpr (Src::kStores) po[r * vecs + c] = o;
      }
    }
    float* pp = partials + static_cast<int64_t>(blockIdx.x) * width + c * N;
#pragma unroll
    for (int j = 0; j < N; ++j) pp[j] = acc[j];
  }
}

// The sum over b of partials[b, c] to out (see SumsOut) for each column c.
template <class T>
__global__ void __launch_bounds__(kPartialSumThreads) partial_sums_kernel(const float* __restrict__ partials,
                                                                          int64_t blocks, int64_t width, SumsOut out) {
  const float t = sum_partial_column(partials, blocks, width);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x % 32;
  if (threadIdx.x >= 32 || c >= width) return;
  if (out.mode == SumsOut::kStore)
    static_cast<T*>(out.p)[c] = from_f<T>(t);
  else if (out.mode == SumsOut::kStoreF32)
    static_cast<float*>(out.p)[c] = t;
  else
    static_cast<float*>(out.p)[c] += t;
}

// One wave of block_sums_kernel<T, Src> blocks of `threads` threads on the current device; 0 where unknown.
template <class T, class Src> int64_t wave_of(int threads) {
  static std::atomic<int64_t> kept[kMaxThreads / 32 + 1][64];  // per block size
  return resident_blocks(kept[threads / 32], block_sums_kernel<T, Src>, threads);
}

template <class T, class Src>
const char* launch(Src src, int64_t rows, int64_t width, void* out, float* partials, SumsOut sums, cudaStream_t s) {
  const int64_t vecs = width / vec_of<T>();
  const int threads = static_cast<int>(vecs < kMaxThreads ? (vecs + 31) / 32 * 32 : kMaxThreads);
  const int64_t chunks = column_sums_partials(rows, width) / width, wave = wave_of<T, Src>(threads);
  const int64_t blocks = wave > 0 && wave < chunks ? wave : chunks;  // partials: at most one row per chunk
  block_sums_kernel<T, Src><<<static_cast<unsigned>(blocks), threads, 0, s>>>(src, rows, width, static_cast<T*>(out),
                                                                              partials);
  partial_sums_kernel<T><<<static_cast<unsigned>((width + 31) / 32), kPartialSumThreads, 0, s>>>(partials, blocks,
                                                                                                width, sums);
  return launched();
}

// Calls f(T{}) for fp16 and bf16; false for fp32.
template <class F> bool with_half(DType d, F&& f) {
  switch (d) {
    case DType::f16: f(__half{}); return true;
    case DType::bf16: f(__nv_bfloat16{}); return true;
    default: return false;
  }
}

}  // namespace

int64_t column_sums_partials(int64_t rows, int64_t width) {
  return (rows + kRowsPerBlock - 1) / kRowsPerBlock * width;
}

const char* gelu_backward_sums(DType dtype, const void* ga, const void* u, int64_t rows, int64_t width, void* gu,
                               float* partials, SumsOut sums, void* stream) {
  const char* err = "gelu_backward_sums: fp16 or bf16 only";
  with_half(dtype, [&](auto t) {
    using T = decltype(t);
    using P = typename GeluBackward<T>::P;
    err = launch<T>(GeluBackward<T>{static_cast<const P*>(ga), static_cast<const P*>(u), width / vec_of<T>()}, rows,
                    width, gu, partials, sums, static_cast<cudaStream_t>(stream));
  });
  return err;
}

const char* column_sums(DType dtype, const void* g, int64_t rows, int64_t width, float* partials, SumsOut sums,
                        void* stream) {
  const char* err = "column_sums: fp16 or bf16 only";
  with_half(dtype, [&](auto t) {
    using T = decltype(t);
    using P = typename Plain<T>::P;
    err = launch<T>(Plain<T>{static_cast<const P*>(g), width / vec_of<T>()}, rows, width, nullptr, partials, sums,
                    static_cast<cudaStream_t>(stream));
  });
  return err;
}

const char* qkv_gather_sums(DType dtype, const QkvParts& parts, void* out, float* partials, SumsOut sums,
                            void* stream) {
  const char* err = "qkv_gather_sums: fp16 or bf16 only";
  const int64_t rows = parts.batch * parts.seq, width = 3 * parts.heads * parts.head_dim;
  with_half(dtype, [&](auto t) {
    using T = decltype(t);
    err = launch<T>(QkvGather<T>{parts}, rows, width, out, partials, sums, static_cast<cudaStream_t>(stream));
  });
  return err;
}

}  // namespace efftrain::kernels

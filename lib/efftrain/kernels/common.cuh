// Helpers shared by the project's CUDA kernels (kernels/*.cu): fp32 <-> storage-type
// conversions and packed loads on the device; on the host the dtype dispatch, the launch-error
// check and a per-device cache.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "efftrain/kernels/launch.h"

namespace efftrain::kernels {

template <class T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
// v rounded to T and back (what storing an fp32 result in T and reading it again gives).
template <class T> __device__ __forceinline__ float round_to(float v) { return to_f(from_f<T>(v)); }

// N elements loaded or stored as one (N * sizeof(T) bytes, aligned to that).
template <class T, int N> struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements per 16-byte load.
template <class T> constexpr int vec_of() { return 16 / static_cast<int>(sizeof(T)); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// The second pass of a column sum over a [n, width] fp32 matrix of partial sums p (one row per
// block of the first pass): for column c = blockIdx.x * 32 + threadIdx.x % 32, the sum over rows,
// returned in the block's first warp (0 elsewhere and past width). Launch with kPartialSumThreads
// threads (32 columns x 32 row groups; four rows in flight per thread); a fixed order, so the same
// result every run.
constexpr int kPartialSumThreads = 1024;
__device__ __forceinline__ float sum_partial_column(const float* __restrict__ p, int64_t n, int64_t width) {
  __shared__ float acc[32][33];
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + tx;
  float s[4] = {0.f, 0.f, 0.f, 0.f};
  if (c < width) {
    int64_t r = ty;
    for (; r + 96 < n; r += 128)
#pragma unroll
      for (int k = 0; k < 4; ++k) s[k] += p[(r + 32 * k) * width + c];
    if (r < n) s[0] += p[r * width + c];
    if (r + 32 < n) s[1] += p[(r + 32) * width + c];
    if (r + 64 < n) s[2] += p[(r + 64) * width + c];
  }
  acc[ty][tx] = (s[0] + s[1]) + (s[2] + s[3]);
  __syncthreads();
  float t = 0.f;
  if (ty == 0)
    for (int i = 0; i < 32; ++i) t += acc[i][tx];
  return t;
}

// Calls f(T{}) with the storage type of `d`.
template <class F> void with_dtype(DType d, F&& f) {
  switch (d) {
    case DType::f32: f(float{}); break;
    case DType::f16: f(__half{}); break;
    case DType::bf16: f(__nv_bfloat16{}); break;
  }
}

// Null, or the CUDA error text of the launches since the last check.
inline const char* launched() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

// query(device) for the current device, asked once per device (0..63) and kept in `kept`; 0, and
// nothing kept, where the device is unknown or the query gives 0 (it is asked again next time).
template <class Query> int64_t per_device(std::atomic<int64_t> (&kept)[64], Query&& query) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 0;
  if (const int64_t v = kept[dev].load()) return v;
  const int64_t v = query(dev);
  if (v != 0) kept[dev] = v;
  return v;
}

// The current device's SM count, asked once per device; 0 if unknown.
inline int64_t sm_count() {
  static std::atomic<int64_t> kept[64];
  return per_device(kept, [](int dev) -> int64_t {
    int v = 0;
    return cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess ? v : 0;
  });
}

// The blocks of `threads` threads (and `smem` bytes of dynamic shared memory) of `kernel` one SM
// of the current device holds at once; 0 if unknown.
template <class Kernel> int64_t blocks_per_sm(Kernel kernel, int threads, size_t smem = 0) {
  int per_sm = 0;
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) == cudaSuccess && per_sm > 0
             ? per_sm
             : 0;
}

// The blocks of `threads` threads of `kernel` the current device holds at once (SMs x occupancy),
// asked once per device and kept in `kept`; 0 where unknown.
template <class Kernel> int64_t resident_blocks(std::atomic<int64_t> (&kept)[64], Kernel kernel, int threads) {
  return per_device(kept, [kernel, threads](int) -> int64_t { return sm_count() * blocks_per_sm(kernel, threads); });
}

}  // namespace efftrain::kernels

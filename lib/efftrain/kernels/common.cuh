// Device helpers shared by the project's CUDA kernels (kernels/*.cu): fp32 <-> storage-type
// conversions and packed loads.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

}  // namespace efftrain::kernels

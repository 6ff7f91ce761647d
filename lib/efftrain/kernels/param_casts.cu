// fp32 tensors cast to fp16/bf16 in one launch (kernels/param_casts.h): one block per chunk of a
// table of (source, destination, count), 16-byte loads where both ends are aligned.
#include "efftrain/kernels/common.cuh"

namespace efftrain::kernels {

namespace {

template <class T>
__global__ void __launch_bounds__(256) cast_chunks_kernel(const CastChunk* __restrict__ chunks) {
  const CastChunk c = chunks[blockIdx.x];
  T* dst = static_cast<T*>(c.dst);
  const bool vec = reinterpret_cast<uintptr_t>(c.src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % (4 * sizeof(T)) == 0;
  int64_t i = 0;
  if (vec) {
    const int64_t n4 = c.n / 4;
    for (int64_t k = threadIdx.x; k < n4; k += blockDim.x) {
      const float4 v = reinterpret_cast<const float4*>(c.src)[k];
      Pack<T, 4> o;
      o.v[0] = from_f<T>(v.x), o.v[1] = from_f<T>(v.y), o.v[2] = from_f<T>(v.z), o.v[3] = from_f<T>(v.w);
      reinterpret_cast<Pack<T, 4>*>(dst)[k] = o;
    }
    i = n4 * 4;
  }
  for (int64_t k = i + threadIdx.x; k < c.n; k += blockDim.x) dst[k] = from_f<T>(c.src[k]);
}

}  // namespace

const char* cast_chunks(DType dtype, const CastChunk* chunks, int64_t count, void* stream) {
  if (count == 0) return nullptr;
  const auto s = static_cast<cudaStream_t>(stream);
  const auto blocks = static_cast<unsigned>(count);
  if (dtype == DType::f16)
    cast_chunks_kernel<__half><<<blocks, 256, 0, s>>>(chunks);
  else if (dtype == DType::bf16)
    cast_chunks_kernel<__nv_bfloat16><<<blocks, 256, 0, s>>>(chunks);
  else
    return "cast_chunks: fp16 or bf16 only";
  return launched();
}

}  // namespace efftrain::kernels

// An embedding's backward added into its gradient: grad[t] += the sum of g's rows at the positions
// that looked up t, in a fixed order (see launch.h). Positions sorted by token (by the caller),
// cut into chunks of kChunk; one warp per chunk sums each run of one token inside it. A run wholly
// inside its chunk is added to grad by that warp (no other touches the row); the pieces of a run
// that crosses chunks go to scratch -- the piece that starts it to last[chunk], each continuing
// piece to first[chunk] -- and a second kernel adds them in chunk order, by the warp of the chunk
// where the run starts.
#include "efftrain/kernels/common.cuh"

namespace efftrain::kernels {

namespace {

constexpr int kChunk = 32;          // sorted positions per warp
constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ void add4(float4& a, const float4 b) {
  a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
}

// Whether the first run of chunk [start, end) continues the previous chunk's last one.
__device__ __forceinline__ bool continues_before(const int64_t* sorted, int64_t start, int64_t token) {
  return start > 0 && sorted[start - 1] == token;
}

__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    chunk_sums_kernel(const int64_t* sorted, const int64_t* perm, const float* g, int64_t n, int64_t width,
                      float* grad, float* first, float* last) {
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t start = chunk * kChunk;
  if (start >= n) return;
  const int64_t end = min(start + kChunk, n);
  for (int64_t col = lane * 4; col < width; col += 32 * 4) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    int64_t run_start = start;
    for (int64_t j = start; j < end; ++j) {
      const int64_t token = sorted[j];
      add4(acc, *reinterpret_cast<const float4*>(g + perm[j] * width + col));
      if (j + 1 < end && sorted[j + 1] == token) continue;
      // the run [run_start, j] of `token` ends in this chunk
      float4* out;
      if (run_start == start && continues_before(sorted, start, token))
        out = reinterpret_cast<float4*>(first + chunk * width + col);
      else if (j + 1 == end && end < n && sorted[end] == token)
        out = reinterpret_cast<float4*>(last + chunk * width + col);
      else {
        out = reinterpret_cast<float4*>(grad + token * width + col);
        add4(acc, *out);
      }
      *out = acc;
      acc = make_float4(0.f, 0.f, 0.f, 0.f);
      run_start = j + 1;
    }
  }
}

__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    crossing_runs_kernel(const int64_t* sorted, int64_t n, int64_t width, float* grad, const float* first,
                         const float* last) {
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t start = chunk * kChunk, chunks = (n + kChunk - 1) / kChunk;
  if (start >= n) return;
  const int64_t end = min(start + kChunk, n);
  const int64_t token = sorted[end - 1];
  // a run starts in this chunk and goes on past its end: the chunk wrote last[chunk]
  const bool whole_continuation = sorted[start] == token && continues_before(sorted, start, token);
  if (end == n || sorted[end] != token || whole_continuation) return;
  for (int64_t col = lane * 4; col < width; col += 32 * 4) {
    float4 acc = *reinterpret_cast<const float4*>(last + chunk * width + col);
    for (int64_t c = chunk + 1; c < chunks && sorted[c * kChunk] == token; ++c)
      add4(acc, *reinterpret_cast<const float4*>(first + c * width + col));
    float4* out = reinterpret_cast<float4*>(grad + token * width + col);
    add4(acc, *out);
    *out = acc;
  }
}

}  // namespace

int64_t embedding_backward_scratch(int64_t n, int64_t width) { return 2 * ((n + kChunk - 1) / kChunk) * width; }

const char* embedding_backward_add(const int64_t* sorted, const int64_t* perm, const float* g, int64_t n,
                                   int64_t width, float* grad, float* scratch, void* stream) {
  if (n == 0) return nullptr;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const unsigned blocks = static_cast<unsigned>((chunks + kWarpsPerBlock - 1) / kWarpsPerBlock);
  float *first = scratch, *last = scratch + chunks * width;
  auto s = static_cast<cudaStream_t>(stream);
  chunk_sums_kernel<<<blocks, 32 * kWarpsPerBlock, 0, s>>>(sorted, perm, g, n, width, grad, first, last);
  crossing_runs_kernel<<<blocks, 32 * kWarpsPerBlock, 0, s>>>(sorted, n, width, grad, first, last);
  return launched();
}

}  // namespace efftrain::kernels

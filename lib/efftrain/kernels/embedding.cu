// An embedding's backward added into its gradient: grad[t] += the sum of g's rows at the positions
// that looked up t, in a fixed order (see launch.h). Positions sorted by token (by the caller),
// cut into chunks of kChunk; one warp per chunk (its tokens and positions one per lane, the
// columns in registers) sums each run of one token inside it. A run wholly
// inside its chunk is added to grad by that warp (no other touches the row); the pieces of a run
// that crosses chunks go to scratch -- the piece that starts it to last[chunk], each continuing
// piece to first[chunk] -- and a second kernel adds them in chunk order, by the warp of the chunk
// where the run starts.
#include "efftrain/kernels/common.cuh"

namespace efftrain::kernels {

namespace {

constexpr int kChunk = 32;  // sorted positions per warp: one per lane
constexpr int kWarpsPerBlock = 4;
constexpr int kTiles = 8;   // float4 columns per lane held at once: 1024 columns a pass

__device__ __forceinline__ void add4(float4& a, const float4 b) {
  a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
}

// Adds to the row at `out` (or, without `add`, writes) the warp's accumulated columns.
__device__ __forceinline__ void emit(float4 (&acc)[kTiles], float* out, int64_t col0, int64_t width, bool add) {
#pragma unroll
  for (int k = 0; k < kTiles; ++k) {
    const int64_t col = col0 + k * 128;
    if (col < width) {
      auto* o = reinterpret_cast<float4*>(out + col);
      if (add) add4(acc[k], *o);
      *o = acc[k];
    }
    acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

// One warp per chunk; lane j holds the chunk's j-th token and its position.
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    chunk_sums_kernel(const int64_t* sorted, const int64_t* perm, const float* g, int64_t n, int64_t width,
                      float* grad, float* first, float* last) {
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t start = chunk * kChunk;
  if (start >= n) return;
  const int len = static_cast<int>(n - start < kChunk ? n - start : kChunk);
  const int64_t tok = lane < len ? sorted[start + lane] : -1, pos = lane < len ? perm[start + lane] : 0;
  const int64_t before = start > 0 ? sorted[start - 1] : -1, after = start + len < n ? sorted[start + len] : -1;
  for (int64_t col0 = lane * 4; col0 < width + lane * 4; col0 += kTiles * 128) {
    float4 acc[kTiles];
#pragma unroll
    for (int k = 0; k < kTiles; ++k) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
    int run_start = 0;
    for (int j = 0; j < len; ++j) {
      const int64_t t = __shfl_sync(0xffffffffu, tok, j), row = __shfl_sync(0xffffffffu, pos, j);
      const int64_t next = __shfl_sync(0xffffffffu, tok, (j + 1) % 32);
      const float* src = g + row * width;
#pragma unroll
      for (int k = 0; k < kTiles; ++k) {
        const int64_t col = col0 + k * 128;
        if (col < width) add4(acc[k], *reinterpret_cast<const float4*>(src + col));
      }
      if (j + 1 < len && next == t) continue;
      // the run [run_start, j] of token t ends in this chunk
      if (run_start == 0 && before == t)
        emit(acc, first + chunk * width, col0, width, false);
      else if (j + 1 == len && after == t)
        emit(acc, last + chunk * width, col0, width, false);
      else
        emit(acc, grad + t * width, col0, width, true);
      run_start = j + 1;
    }
  }
}

// One warp per chunk whose last run goes on past its end and starts in it (the chunk wrote
// last[chunk]): that run's pieces summed in chunk order, added to grad.
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    crossing_runs_kernel(const int64_t* sorted, int64_t n, int64_t width, float* grad, const float* first,
                         const float* last) {
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t start = chunk * kChunk, chunks = (n + kChunk - 1) / kChunk;
  if (start >= n) return;
  const int64_t end = min(start + kChunk, n);
  const int64_t token = sorted[end - 1];
  const bool whole_continuation = sorted[start] == token && start > 0 && sorted[start - 1] == token;
  if (end == n || sorted[end] != token || whole_continuation) return;
  // the chunks after this one that start with the run: chunk + 1 .. chunk + more
  int64_t more = 0;
  for (;;) {
    const int64_t c = chunk + 1 + more + lane;
    const unsigned cont = __ballot_sync(0xffffffffu, c < chunks && sorted[c * kChunk] == token);
    const int k = __ffs(~cont) - 1;  // the first lane whose chunk does not continue (-1: all do)
    more += k < 0 ? 32 : k;
    if (k >= 0) break;
  }
  for (int64_t col0 = lane * 4; col0 < width + lane * 4; col0 += kTiles * 128) {
    float4 acc[kTiles];
#pragma unroll
    for (int k = 0; k < kTiles; ++k) {
      const int64_t col = col0 + k * 128;
      acc[k] = col < width ? *reinterpret_cast<const float4*>(last + chunk * width + col) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    for (int64_t c = chunk + 1; c <= chunk + more; ++c)
#pragma unroll
      for (int k = 0; k < kTiles; ++k) {
        const int64_t col = col0 + k * 128;
        if (col < width) add4(acc[k], *reinterpret_cast<const float4*>(first + c * width + col));
      }
    emit(acc, grad + token * width, col0, width, true);
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

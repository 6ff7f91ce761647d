// Residual add + dropout + LayerNorm in one pass per direction (GPT's pre-LayerNorm blocks:
// s = s + dropout(projection); y = layer_norm(s)), compiled by nvcc without LibTorch headers
// (kernels/residual_norm.cpp is the autograd side). One warp per row; each lane holds its
// width / 32 elements in registers, four consecutive ones per 16-byte fp32 load, so a row is
// read once and written once. The unfused chain runs four kernels forward (dropout, add,
// LayerNorm, the autocast cast of its output) and five backward, each through global memory.
// Dropout draws from the CUDA generator's Philox stream (curand's Philox4x32-10, one subsequence
// per four elements, as ATen's kernels do) and is drawn again in backward from the same
// position, so no mask is stored; under graph capture the position is read on the device
// (at::PhiloxCudaState's contract), so every replay draws anew and backward matches forward.
#include <cuda_runtime.h>
#include <curand_kernel.h>

#include <cstdint>
#include <type_traits>

#include "efftrain/kernels/common.cuh"
#include "efftrain/kernels/launch.h"

namespace efftrain::kernels {
namespace {

constexpr int kWarps = 4;  // rows per block of 128 threads

__device__ __forceinline__ void unpack(const Philox& r, uint64_t& seed, uint64_t& offset) {
  if (r.captured) {
    seed = static_cast<uint64_t>(*r.seed_ptr);
    offset = static_cast<uint64_t>(*r.offset_ptr) + r.intragraph;
  } else {
    seed = r.seed;
    offset = r.offset;
  }
}

// Keep flags of the four elements of group `sub` (row * width / 4 + group in the row).
__device__ __forceinline__ void keep4(uint64_t seed, uint64_t offset, uint64_t sub, float keep, bool k[4]) {
  curandStatePhilox4_32_10_t st;
  curand_init(seed, sub, offset, &st);
  const float4 r = curand_uniform4(&st);
  k[0] = r.x < keep;
  k[1] = r.y < keep;
  k[2] = r.z < keep;
  k[3] = r.w < keep;
}

// N4: groups of four elements per lane (width = 128 * N4).
template <class T, int N4>
__global__ void __launch_bounds__(32 * kWarps)
    residual_norm_forward_kernel(const float* __restrict__ s_in, const T* __restrict__ h,
                                 const float* __restrict__ gamma, const float* __restrict__ beta, int64_t rows,
                                 float keep, Philox rng, float eps, float* __restrict__ s_out, T* __restrict__ y,
                                 float* __restrict__ mean_out, float* __restrict__ rstd_out) {
  constexpr int W = 128 * N4;
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= rows) return;
  const bool drop = keep < 1.f;
  uint64_t seed = 0, offset = 0;
  if (drop) unpack(rng, seed, offset);
  const float scale = 1.f / keep;
  const auto* ps = reinterpret_cast<const float4*>(s_in + row * W);
  const auto* ph = reinterpret_cast<const Pack<T, 4>*>(h + row * W);
  float v[N4][4];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < N4; ++k) {
    const int g = k * 32 + lane;
    const float4 a = ps[g];
    const Pack<T, 4> b = ph[g];
    bool kept[4] = {true, true, true, true};
    if (drop) keep4(seed, offset, static_cast<uint64_t>(row) * (W / 4) + g, keep, kept);
    const float av[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // ATen's dropout: h * mask * scale in fp32, stored in h's dtype; the add promotes to fp32
      const float d = drop ? (kept[j] ? round_to<T>(to_f(b.v[j]) * scale) : 0.f) : to_f(b.v[j]);
      v[k][j] = av[j] + d;
      sum += v[k][j];
    }
  }
  const float mean = warp_sum(sum) / W;
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < N4; ++k)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float c = v[k][j] - mean;
      sq += c * c;
    }
  const float rstd = rsqrtf(warp_sum(sq) / W + eps);
  auto* po = reinterpret_cast<float4*>(s_out + row * W);
  auto* py = reinterpret_cast<Pack<T, 4>*>(y + row * W);
  const auto* pg = reinterpret_cast<const float4*>(gamma);
  const auto* pb = reinterpret_cast<const float4*>(beta);
#pragma unroll
  for (int k = 0; k < N4; ++k) {
    const int g = k * 32 + lane;
    po[g] = make_float4(v[k][0], v[k][1], v[k][2], v[k][3]);
    const float4 ga = pg[g], be = pb[g];
    const float gv[4] = {ga.x, ga.y, ga.z, ga.w}, bv[4] = {be.x, be.y, be.z, be.w};
    Pack<T, 4> o;
#pragma unroll
    for (int j = 0; j < 4; ++j) o.v[j] = from_f<T>((v[k][j] - mean) * rstd * gv[j] + bv[j]);
    py[g] = o;
  }
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// Each warp takes rows warp, warp + warps, ...; its per-column sums of dy * xhat and dy go to
// partials[warp] (gamma) and partials[warps + warp] (beta), width floats each. A row's ds_out is
// loaded with its dy and s, before the row's sums (one wait for memory per row instead of two);
// up to 768 wide the registers are held to three blocks per SM for that (GPT-2 small: 168, 16
// bytes spilled, against 202 unbounded).
template <class T, int N4>
__global__ void __launch_bounds__(32 * kWarps, N4 <= 6 ? 3 : 1)
    residual_norm_backward_kernel(const T* __restrict__ dy, const float* __restrict__ ds_out,
                                  const float* __restrict__ s_out, const float* __restrict__ mean,
                                  const float* __restrict__ rstd, const float* __restrict__ gamma, int64_t rows,
                                  float keep, Philox rng, float* __restrict__ ds, T* __restrict__ dh,
                                  float* __restrict__ partials) {
  constexpr int W = 128 * N4;
  const int lane = threadIdx.x % 32;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  const bool drop = keep < 1.f;
  uint64_t seed = 0, offset = 0;
  if (drop) unpack(rng, seed, offset);
  const float scale = 1.f / keep;
  const auto* pg = reinterpret_cast<const float4*>(gamma);
  float dg[N4][4] = {}, db[N4][4] = {};
  for (int64_t row = warp; row < rows; row += warps) {
    const auto* pdy = reinterpret_cast<const Pack<T, 4>*>(dy + row * W);
    const auto* ps = reinterpret_cast<const float4*>(s_out + row * W);
    const float mu = mean[row], rs = rstd[row];
    const auto* pso = reinterpret_cast<const float4*>(ds_out ? ds_out + row * W : nullptr);
    float xh[N4][4], dyv[N4][4];  // dy * gamma is formed again below (fewer registers, more warps)
    float4 so[N4];  // ds_out, loaded with dy and s: one wait for memory per row, not two
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int k = 0; k < N4; ++k) {
      const int g = k * 32 + lane;
      so[k] = pso ? pso[g] : make_float4(0.f, 0.f, 0.f, 0.f);
      const Pack<T, 4> d = pdy[g];
      const float4 s = ps[g], ga = pg[g];
      const float sv[4] = {s.x, s.y, s.z, s.w}, gv[4] = {ga.x, ga.y, ga.z, ga.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        dyv[k][j] = to_f(d.v[j]);
        xh[k][j] = (sv[j] - mu) * rs;
        const float gy = dyv[k][j] * gv[j];
        s1 += gy;
        s2 += gy * xh[k][j];
      }
    }
    const float m1 = warp_sum(s1) / W, m2 = warp_sum(s2) / W;
    auto* pds = reinterpret_cast<float4*>(ds + row * W);
    auto* pdh = reinterpret_cast<Pack<T, 4>*>(dh + row * W);
#pragma unroll
    for (int k = 0; k < N4; ++k) {
      const int g = k * 32 + lane;
      float r[4] = {so[k].x, so[k].y, so[k].z, so[k].w};
      bool kept[4] = {true, true, true, true};
      if (drop) keep4(seed, offset, static_cast<uint64_t>(row) * (W / 4) + g, keep, kept);
      const float4 ga = pg[g];
      const float gv[4] = {ga.x, ga.y, ga.z, ga.w};
      Pack<T, 4> o;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        r[j] += rs * (dyv[k][j] * gv[j] - m1 - xh[k][j] * m2);
        // the add's backward hands dropout its gradient in h's dtype; dropout's scales it in fp32
        o.v[j] = drop ? from_f<T>(kept[j] ? round_to<T>(r[j]) * scale : 0.f) : from_f<T>(r[j]);
        dg[k][j] += dyv[k][j] * xh[k][j];
        db[k][j] += dyv[k][j];
      }
      pds[g] = make_float4(r[0], r[1], r[2], r[3]);
      pdh[g] = o;
    }
  }
  auto* pgam = reinterpret_cast<float4*>(partials + warp * W);
  auto* pbet = reinterpret_cast<float4*>(partials + (warps + warp) * W);
#pragma unroll
  for (int k = 0; k < N4; ++k) {
    const int g = k * 32 + lane;
    pgam[g] = make_float4(dg[k][0], dg[k][1], dg[k][2], dg[k][3]);
    pbet[g] = make_float4(db[k][0], db[k][1], db[k][2], db[k][3]);
  }
}

// dgamma (blockIdx.y 0) and dbeta (1): the sums over warps of their partials, written or added.
__global__ void __launch_bounds__(kPartialSumThreads) column_sums_kernel(const float* __restrict__ partials,
                                                                         int64_t warps, int64_t width,
                                                                         float* __restrict__ dgamma,
                                                                         float* __restrict__ dbeta, bool add) {
  const float t = sum_partial_column(partials + blockIdx.y * warps * width, warps, width);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x % 32;
  if (threadIdx.x >= 32 || c >= width) return;
  float& out = (blockIdx.y == 0 ? dgamma : dbeta)[c];
  out = add ? out + t : t;
}

// Calls f(std::integral_constant<int, N4>) for the supported widths (128 x N4).
template <class F> bool with_width(int64_t width, F&& f) {
  switch (width) {
    case 128: f(std::integral_constant<int, 1>{}); return true;
    case 256: f(std::integral_constant<int, 2>{}); return true;
    case 384: f(std::integral_constant<int, 3>{}); return true;
    case 512: f(std::integral_constant<int, 4>{}); return true;
    case 768: f(std::integral_constant<int, 6>{}); return true;
    case 1024: f(std::integral_constant<int, 8>{}); return true;
    case 1280: f(std::integral_constant<int, 10>{}); return true;
    case 1536: f(std::integral_constant<int, 12>{}); return true;
    case 2048: f(std::integral_constant<int, 16>{}); return true;
    default: return false;
  }
}

// The backward kernel's warps for `rows`: one full wave of its blocks on the current device, at
// most one warp per row. Each warp loops over rows, so any count is correct; a fixed 2048 warps
// (512 blocks) ran as 1.3 waves on 132 SMs at the kernel's 3 blocks per SM (167 registers for
// GPT-2's width), the second wave's few blocks leaving most SMs idle. The wave is asked of the
// device once (512 blocks where it cannot be): the wrapper sizes the partial sums with this and
// the launch uses it again, every backward.
template <class T, int N4> int64_t backward_warps(int64_t rows) {
  static std::atomic<int64_t> wave[64];  // blocks per device
  int64_t blocks = resident_blocks(wave, residual_norm_backward_kernel<T, N4>, 32 * kWarps);
  if (blocks == 0) blocks = 512;
  const int64_t w = rows < blocks * kWarps ? rows : blocks * kWarps;
  return (w + kWarps - 1) / kWarps * kWarps;
}

}  // namespace

bool residual_norm_width_supported(int64_t width) {
  return with_width(width, [](auto) {});
}

int64_t residual_norm_partials(DType dtype, int64_t rows, int64_t width) {
  int64_t warps = 0;
  with_dtype(dtype, [&](auto t) {
    with_width(width, [&](auto n4) { warps = backward_warps<decltype(t), decltype(n4)::value>(rows); });
  });
  return 2 * warps * width;
}

const char* residual_norm_forward(DType dtype, const float* s_in, const void* h, const float* gamma, const float* beta,
                                  int64_t rows, int64_t width, float keep, Philox rng, float eps, float* s_out,
                                  void* y, float* mean, float* rstd, void* stream) {
  if (rows == 0) return nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const auto blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  bool ok = true;
  with_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    ok = with_width(width, [&](auto n4) {
      residual_norm_forward_kernel<T, decltype(n4)::value><<<blocks, 32 * kWarps, 0, s>>>(
          s_in, static_cast<const T*>(h), gamma, beta, rows, keep, rng, eps, s_out, static_cast<T*>(y), mean, rstd);
    });
  });
  if (!ok) return "residual_norm_forward: unsupported width";
  return launched();
}

const char* residual_norm_backward(DType dtype, const void* dy, const float* ds_out, const float* s_out,
                                   const float* mean, const float* rstd, const float* gamma, int64_t rows,
                                   int64_t width, float keep, Philox rng, float* ds, void* dh, float* partials,
                                   float* dgamma, float* dbeta, bool add, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t warps = residual_norm_partials(dtype, rows, width) / (2 * width);
  if (rows > 0) {
    bool ok = true;
    with_dtype(dtype, [&](auto t) {
      using T = decltype(t);
      ok = with_width(width, [&](auto n4) {
        residual_norm_backward_kernel<T, decltype(n4)::value><<<static_cast<unsigned>(warps / kWarps), 32 * kWarps, 0, s>>>(
            static_cast<const T*>(dy), ds_out, s_out, mean, rstd, gamma, rows, keep, rng, ds, static_cast<T*>(dh),
            partials);
      });
    });
    if (!ok) return "residual_norm_backward: unsupported width";
    if (const char* e = launched()) return e;
  }
  const dim3 grid(static_cast<unsigned>((width + 31) / 32), 2);
  column_sums_kernel<<<grid, kPartialSumThreads, 0, s>>>(partials, warps, width, dgamma, dbeta, add);
  return launched();
}

}  // namespace efftrain::kernels

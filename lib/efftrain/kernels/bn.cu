// Training BatchNorm (+ residual add) (+ ReLU) over NHWC fp16/bf16 activations viewed as
// [rows, channels] (launch.h). Every kernel is bandwidth-bound: each thread owns 8 channels (one
// 16-byte load) of the rows it visits, so a block of 256 threads covers 256 / (channels / 8) rows
// per step and every warp reads contiguous memory.
// Forward: (1) per-channel sums of x - x[0] and of its square, one row of partials per block;
// (2) their column sums (sum_partial_column, a fixed order) give the mean, the biased variance,
// 1 / sqrt(var + eps), scale = weight * invstd, shift = bias - mean * scale and the running
// averages (momentum, unbiased variance) as ATen's BatchNorm updates them; (3) y = relu(x * scale
// + shift [+ z]) rounded once.
// Backward: g = dy where the ReLU passed it (masked), (1) per-channel sums of g and of
// g * (x - mean), g written out as dz where there is a residual add; (2) their column sums give
// dbias, dweight (written or added) and the two coefficients of dx; (3) dx = scale * g +
// kx * (x - mean) + k0. Without the add the ReLU's mask is recomputed from x (the forward's
// rounding of the same fma), with it read from y.
#include <algorithm>
#include <type_traits>

#include "efftrain/kernels/common.cuh"

namespace efftrain::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;           // channels per thread: 16 bytes of fp16/bf16
constexpr int kRowsPerThread = 32;  // the reductions' blocks: about this many rows per thread

template <class T> __device__ __forceinline__ void load8(const T* p, float (&f)[kVec]) {
  const auto v = *reinterpret_cast<const Pack<T, kVec>*>(p);
#pragma unroll
  for (int k = 0; k < kVec; ++k) f[k] = to_f(v.v[k]);
}
template <class T> __device__ __forceinline__ void store8(T* p, const float (&f)[kVec]) {
  Pack<T, kVec> v;
#pragma unroll
  for (int k = 0; k < kVec; ++k) v.v[k] = from_f<T>(f[k]);
  *reinterpret_cast<Pack<T, kVec>*>(p) = v;
}
__device__ __forceinline__ void load8(const float* p, float (&f)[kVec]) {
#pragma unroll
  for (int k = 0; k < kVec; ++k) f[k] = p[k];
}

// ReLU that keeps NaN (as ATen's and cuDNN's with NaN propagation do).
__device__ __forceinline__ float relu(float t) { return t <= 0.f ? 0.f : t; }

// The thread's place: `lanes` = channels / 8 threads per row, kThreads / lanes rows per block
// step; its 8 channels start at `col` of a row, its rows are row0, row0 + step, ...
struct Place {
  int lane, group, groups;
  int64_t C, col, row0, step;
  __device__ explicit Place(int lanes)
      : lane(static_cast<int>(threadIdx.x) % lanes), group(static_cast<int>(threadIdx.x) / lanes),
        groups(kThreads / lanes), C(static_cast<int64_t>(lanes) * kVec), col(static_cast<int64_t>(lane) * kVec),
        row0(static_cast<int64_t>(blockIdx.x) * groups + group), step(static_cast<int64_t>(gridDim.x) * groups) {}
};

// The block's per-thread sums a[k], b[k] (channel lane * 8 + k) summed over its row groups in a
// fixed order: part[blockIdx.x][2c] and [2c + 1] for channel c.
__device__ void block_partials(const float (&a)[kVec], const float (&b)[kVec], int lanes, float* __restrict__ part) {
  __shared__ float sh[kThreads * 2 * kVec];
  float* mine = sh + threadIdx.x * 2 * kVec;
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    mine[2 * k] = a[k];
    mine[2 * k + 1] = b[k];
  }
  __syncthreads();
  const int width = lanes * 2 * kVec, groups = kThreads / lanes;
  for (int e = threadIdx.x; e < width; e += kThreads) {
    float s = 0.f;
    for (int g = 0; g < groups; ++g) s += sh[g * width + e];
    part[static_cast<int64_t>(blockIdx.x) * width + e] = s;
  }
}

// The second pass over block_partials' rows, in a block of kPartialSumThreads: channel c's two
// sums (columns 2c and 2c + 1, summed in a fixed order) in `s` and `s2` of one thread of the
// first warp, which gets c; every other thread gets -1. All threads must call it.
__device__ __forceinline__ int64_t channel_sums(const float* __restrict__ part, int64_t nparts, int64_t C, float& s,
                                                float& s2) {
  s = sum_partial_column(part, nparts, 2 * C);
  s2 = __shfl_down_sync(0xffffffffu, s, 1);
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x % 32;
  return threadIdx.x >= 32 || col >= 2 * C || (col & 1) ? -1 : col / 2;
}

template <class T>
__global__ void __launch_bounds__(kThreads) bn_stats_kernel(const T* __restrict__ x, int64_t rows, int lanes,
                                                         float* __restrict__ part) {
  const Place p(lanes);
  const int64_t C = p.C, col = p.col, step = p.step;
  float shift[kVec], s1[kVec] = {}, s2[kVec] = {};
  load8(x + col, shift);  // row 0: sums of x - x[0] lose nothing to cancellation where |mean| >> std
  int64_t r = p.row0;
  for (; r + step < rows; r += 2 * step) {  // two rows in flight
    float v0[kVec], v1[kVec];
    load8(x + r * C + col, v0);
    load8(x + (r + step) * C + col, v1);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float d0 = v0[k] - shift[k], d1 = v1[k] - shift[k];
      s1[k] += d0 + d1;
      s2[k] = fmaf(d0, d0, fmaf(d1, d1, s2[k]));
    }
  }
  if (r < rows) {
    float v[kVec];
    load8(x + r * C + col, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float d = v[k] - shift[k];
      s1[k] += d;
      s2[k] = fmaf(d, d, s2[k]);
    }
  }
  block_partials(s1, s2, lanes, part);
}

template <class T>
__global__ void __launch_bounds__(kPartialSumThreads)
    bn_stats_finalize_kernel(const float* __restrict__ part, int64_t nparts, int64_t C, const T* __restrict__ x,
                          int64_t rows, const float* __restrict__ weight, const float* __restrict__ bias, float eps,
                          float momentum, float* running_mean, float* running_var, float* __restrict__ mean,
                          float* __restrict__ invstd, float* __restrict__ scale, float* __restrict__ shift) {
  float t, t2;
  const int64_t c = channel_sums(part, nparts, C, t, t2);
  if (c < 0) return;
  const float n = static_cast<float>(rows), m1 = t / n;
  const float var = fmaxf(t2 / n - m1 * m1, 0.f);
  const float mu = to_f(x[c]) + m1, inv = 1.f / sqrtf(var + eps), sc = weight[c] * inv;
  mean[c] = mu;
  invstd[c] = inv;
  scale[c] = sc;
  shift[c] = bias[c] - mu * sc;
  if (running_mean != nullptr) {
    running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mu;
    running_var[c] = (1.f - momentum) * running_var[c] + momentum * var * n / (n - 1.f);
  }
}

template <class T, bool kAdd, bool kRelu>
__global__ void __launch_bounds__(kThreads)
    bn_apply_kernel(const T* __restrict__ x, const T* __restrict__ z, const float* __restrict__ scale,
                 const float* __restrict__ shift, int64_t rows, int lanes, T* __restrict__ y) {
  const Place p(lanes);
  const int64_t C = p.C, col = p.col, step = p.step;
  float sc[kVec], sh[kVec];
  load8(scale + col, sc);
  load8(shift + col, sh);
  for (int64_t r = p.row0; r < rows; r += step) {
    const int64_t o = r * C + col;
    float v[kVec], zz[kVec];
    load8(x + o, v);
    if (kAdd) load8(z + o, zz);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      float t = fmaf(v[k], sc[k], sh[k]);
      if (kAdd) t += zz[k];
      v[k] = kRelu ? relu(t) : t;
    }
    store8(y + o, v);
  }
}

// Whether the ReLU passed the gradient at this element: not y <= 0 (ATen's threshold_backward on
// the ReLU's result, which passes it where y is NaN), y read (with the add) or recomputed from x as
// the forward computed and rounded it.
template <class T, bool kAdd, bool kRelu>
__device__ __forceinline__ float masked(float g, float x, float sc, float sh, float y) {
  if (!kRelu) return g;
  const bool off = kAdd ? y <= 0.f : round_to<T>(fmaf(x, sc, sh)) <= 0.f;
  return off ? 0.f : g;
}

template <class T, bool kAdd, bool kRelu>
__global__ void __launch_bounds__(kThreads, 3)  // three blocks per SM: two rows in flight each
    bn_backward_reduce_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ dy,
                           const float* __restrict__ mean, const float* __restrict__ scale,
                           const float* __restrict__ shift, int64_t rows, int lanes, T* __restrict__ dz,
                           float* __restrict__ part) {
  const Place p(lanes);
  const int64_t C = p.C, col = p.col, step = p.step;
  float mu[kVec], sc[kVec], sh[kVec], sg[kVec] = {}, sgx[kVec] = {};
  load8(mean + col, mu);
  load8(scale + col, sc);
  load8(shift + col, sh);
  // Two rows in flight where the next one exists (one at a time held half the bandwidth), kept
  // packed until used.
  using P = Pack<T, kVec>;
  for (int64_t r = p.row0; r < rows; r += 2 * step) {
    const int n = r + step < rows ? 2 : 1;
    P pv[2], pd[2], py[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if (i == n) break;
      const int64_t o = (r + i * step) * C + col;
      pv[i] = *reinterpret_cast<const P*>(x + o);
      pd[i] = *reinterpret_cast<const P*>(dy + o);
      if (kAdd) py[i] = *reinterpret_cast<const P*>(y + o);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if (i == n) break;
      float d[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const float v = to_f(pv[i].v[k]);
        d[k] = masked<T, kAdd, kRelu>(to_f(pd[i].v[k]), v, sc[k], sh[k], kAdd ? to_f(py[i].v[k]) : 0.f);
        sg[k] += d[k];
        sgx[k] = fmaf(d[k], v - mu[k], sgx[k]);
      }
      if (kAdd) store8(dz + (r + i * step) * C + col, d);  // exact: dy or 0
    }
  }
  block_partials(sg, sgx, lanes, part);
}

__global__ void __launch_bounds__(kPartialSumThreads)
    bn_backward_finalize_kernel(const float* __restrict__ part, int64_t nparts, int64_t C, int64_t rows,
                             const float* __restrict__ invstd, const float* __restrict__ scale, float* dweight,
                             float* dbias, bool accumulate, float* __restrict__ kx, float* __restrict__ k0) {
  float t, t2;
  const int64_t c = channel_sums(part, nparts, C, t, t2);
  if (c < 0) return;
  const float inv = invstd[c], db = t, dw = t2 * inv, n = static_cast<float>(rows);
  if (dweight != nullptr) {
    dweight[c] = accumulate ? dweight[c] + dw : dw;
    dbias[c] = accumulate ? dbias[c] + db : db;
  }
  // dx = scale * (g - db / n - (x - mean) * invstd * dw / n)
  kx[c] = -scale[c] * inv * dw / n;
  k0[c] = -scale[c] * db / n;
}

template <class T, bool kAdd, bool kRelu>
__global__ void __launch_bounds__(kThreads)
    bn_backward_apply_kernel(const T* __restrict__ x, const T* __restrict__ g, const float* __restrict__ mean,
                          const float* __restrict__ scale, const float* __restrict__ shift,
                          const float* __restrict__ kx, const float* __restrict__ k0, int64_t rows, int lanes,
                          T* __restrict__ dx) {
  const Place p(lanes);
  const int64_t C = p.C, col = p.col, step = p.step;
  float mu[kVec], sc[kVec], sh[kVec], a[kVec], b[kVec];
  load8(mean + col, mu);
  load8(scale + col, sc);
  load8(shift + col, sh);
  load8(kx + col, a);
  load8(k0 + col, b);
  for (int64_t r = p.row0; r < rows; r += step) {
    const int64_t o = r * C + col;
    float v[kVec], d[kVec];
    load8(x + o, v);
    load8(g + o, d);  // dz (already masked) with the add, else dy
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float gk = kAdd ? d[k] : masked<T, false, kRelu>(d[k], v[k], sc[k], sh[k], 0.f);
      v[k] = fmaf(sc[k], gk, fmaf(a[k], v[k] - mu[k], b[k]));
    }
    store8(dx + o, v);
  }
}

int lanes_of(int64_t channels) { return static_cast<int>(channels / kVec); }

// At most this many blocks per launch: a wave of 256-thread blocks on every SM (bn_partials'
// bound on the reductions' partial rows).
int64_t block_cap() { return std::max<int64_t>(sm_count(), 1) * (2048 / kThreads); }
int64_t reduce_want(int64_t rows, int lanes) {
  const int64_t per_block = static_cast<int64_t>(kThreads / lanes) * kRowsPerThread;
  return std::max<int64_t>(1, std::min((rows + per_block - 1) / per_block, block_cap()));
}
// Blocks for a reduction over `rows` (about kRowsPerThread rows per thread) or an element-wise
// pass (one row per thread per step), at most one wave of `kernel`.
template <class Kernel>
int64_t blocks(std::atomic<int64_t> (&kept)[64], Kernel kernel, int64_t rows, int lanes, bool reduce) {
  const int64_t groups = kThreads / lanes;
  const int64_t want = reduce ? reduce_want(rows, lanes) : (rows + groups - 1) / groups;
  const int64_t wave = resident_blocks(kept, kernel, kThreads);
  return std::max<int64_t>(1, std::min({want, wave > 0 ? wave : block_cap(), block_cap()}));
}

// The forward's element-wise pass, y = relu(x * scale + shift [+ z]): forward_t's last kernel, and
// bn_relu_remake's.
template <class T, bool kAdd, bool kRelu>
void apply_t(const void* x, const void* z, const float* scale, const float* shift, int64_t rows, int64_t C, void* y,
             cudaStream_t s) {
  static std::atomic<int64_t> kept[64];
  const int lanes = lanes_of(C);
  const auto apply = bn_apply_kernel<T, kAdd, kRelu>;
  apply<<<blocks(kept, apply, rows, lanes, false), kThreads, 0, s>>>(
      static_cast<const T*>(x), static_cast<const T*>(z), scale, shift, rows, lanes, static_cast<T*>(y));
}

template <class T, bool kAdd, bool kRelu>
void forward_t(const void* x, const void* z, const float* weight, const float* bias, int64_t rows, int64_t C,
               float eps, float momentum, float* running_mean, float* running_var, float* part, float* mean,
               float* invstd, float* scale, float* shift, void* y, cudaStream_t s) {
  static std::atomic<int64_t> kept_stats[64];
  const int lanes = lanes_of(C);
  const auto* xt = static_cast<const T*>(x);
  const int64_t nparts = blocks(kept_stats, bn_stats_kernel<T>, rows, lanes, true);
  bn_stats_kernel<T><<<nparts, kThreads, 0, s>>>(xt, rows, lanes, part);
  bn_stats_finalize_kernel<T><<<(2 * C + 31) / 32, kPartialSumThreads, 0, s>>>(
      part, nparts, C, xt, rows, weight, bias, eps, momentum, running_mean, running_var, mean, invstd, scale, shift);
  apply_t<T, kAdd, kRelu>(x, z, scale, shift, rows, C, y, s);
}

template <class T, bool kAdd, bool kRelu>
void backward_t(const void* x, const void* y, const void* dy, const float* mean, const float* invstd,
                const float* scale, const float* shift, int64_t rows, int64_t C, float* part, float* coef,
                float* dweight, float* dbias, bool accumulate, void* dz, void* dx, cudaStream_t s) {
  static std::atomic<int64_t> kept_reduce[64], kept_apply[64];
  const int lanes = lanes_of(C);
  const auto* xt = static_cast<const T*>(x);
  const auto reduce = bn_backward_reduce_kernel<T, kAdd, kRelu>;
  const int64_t nparts = blocks(kept_reduce, reduce, rows, lanes, true);
  reduce<<<nparts, kThreads, 0, s>>>(xt, static_cast<const T*>(y), static_cast<const T*>(dy), mean, scale, shift, rows,
                                     lanes, static_cast<T*>(dz), part);
  bn_backward_finalize_kernel<<<(2 * C + 31) / 32, kPartialSumThreads, 0, s>>>(part, nparts, C, rows, invstd, scale,
                                                                          dweight, dbias, accumulate, coef, coef + C);
  const auto apply = bn_backward_apply_kernel<T, kAdd, kRelu>;
  apply<<<blocks(kept_apply, apply, rows, lanes, false), kThreads, 0, s>>>(
      xt, static_cast<const T*>(kAdd ? dz : dy), mean, scale, shift, coef, coef + C, rows, lanes,
      static_cast<T*>(dx));
}

// f(T{}, add, relu) as template arguments: (false, false), (false, true), (true, true).
template <class F> const char* with_bn_types(DType d, bool add, bool relu, F&& f) {
  if (d == DType::f32) return "bn: fp16 or bf16 only";
  if (add && !relu) return "bn: the residual add comes with the ReLU only";
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_same_v<T, float>) {
      if (add) f(T{}, std::true_type{}, std::true_type{});
      else if (relu) f(T{}, std::false_type{}, std::true_type{});
      else f(T{}, std::false_type{}, std::false_type{});
    }
  });
  return launched();
}

}  // namespace

bool bn_channels_supported(int64_t channels) {
  return channels >= kVec && channels <= kVec * kThreads && (channels & (channels - 1)) == 0;
}

int64_t bn_partials(int64_t rows, int64_t channels) { return reduce_want(rows, lanes_of(channels)) * 2 * channels; }

const char* bn_forward(DType dtype, const void* x, const void* z, const float* weight, const float* bias,
                       int64_t rows, int64_t channels, bool relu, float eps, float momentum, float* running_mean,
                       float* running_var, float* partials, float* mean, float* invstd, float* scale, float* shift,
                       void* y, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  return with_bn_types(dtype, z != nullptr, relu, [&](auto t, auto add, auto rl) {
    forward_t<decltype(t), decltype(add)::value, decltype(rl)::value>(x, z, weight, bias, rows, channels, eps, momentum,
                                                                      running_mean, running_var, partials, mean,
                                                                      invstd, scale, shift, y, s);
  });
}

const char* bn_relu_remake(DType dtype, const void* x, const float* scale, const float* shift, int64_t rows,
                           int64_t channels, void* y, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  return with_bn_types(dtype, false, true, [&](auto t, auto add, auto rl) {
    apply_t<decltype(t), decltype(add)::value, decltype(rl)::value>(x, nullptr, scale, shift, rows, channels, y, s);
  });
}

const char* bn_backward(DType dtype, const void* x, const void* y, const void* dy, const float* mean,
                        const float* invstd, const float* scale, const float* shift, int64_t rows, int64_t channels,
                        bool relu, bool add, float* partials, float* coef, float* dweight, float* dbias,
                        bool accumulate, void* dz, void* dx, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  return with_bn_types(dtype, add, relu, [&](auto t, auto ad, auto rl) {
    backward_t<decltype(t), decltype(ad)::value, decltype(rl)::value>(x, y, dy, mean, invstd, scale, shift, rows,
                                                                      channels, partials, coef, dweight, dbias,
                                                                      accumulate, dz, dx, s);
  });
}

}  // namespace efftrain::kernels

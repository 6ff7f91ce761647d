// Plain-pointer entry points of the project's CUDA kernels (*.cu, compiled by nvcc without
// LibTorch). Each launches on the given stream (a cudaStream_t) and returns null, or the CUDA
// error text of the launch. Built only where CMake finds nvcc (EFFTRAIN_WITH_KERNELS); the
// torch-facing wrappers beside them fall back to ATen otherwise.
#pragma once

#include <cstdint>

namespace efftrain::kernels {

enum class DType { f32, f16, bf16 };

// logits [rows, vocab] contiguous; targets [rows]; writes lse [rows] and loss [rows] (fp32).
const char* cross_entropy_forward(DType dtype, const void* logits, const int64_t* targets, int64_t rows,
                                  int64_t vocab, float* lse, float* loss, void* stream);
// dlogits = (softmax(logits) - onehot(targets)) * grad[0] * scale; dlogits may be logits.
const char* cross_entropy_backward(DType dtype, const void* logits, const int64_t* targets, const float* lse,
                                   const float* grad, float scale, int64_t rows, int64_t vocab, void* dlogits,
                                   void* stream);

// Both of the above over the same logits, the gradient written over them: lse, loss and
// logits = (softmax(logits) - onehot(targets)) * grad[0] * scale. One pass (the row staged in
// shared memory) where a row fits the block's shared memory and vocab is a multiple of 16 bytes'
// worth of elements; else the two kernels.
const char* cross_entropy_forward_grad(DType dtype, void* logits, const int64_t* targets, const float* grad,
                                       float scale, int64_t rows, int64_t vocab, float* lse, float* loss,
                                       void* stream);

// The CUDA generator's Philox position for one kernel (at::PhiloxCudaState's fields): while a
// graph is captured the seed and the base offset are read on the device from the pointers
// (plus `intragraph`), so a replay draws new numbers; otherwise the values are used.
struct Philox {
  uint64_t seed = 0, offset = 0;
  const int64_t* seed_ptr = nullptr;
  const int64_t* offset_ptr = nullptr;
  uint64_t intragraph = 0;
  bool captured = false;
};
// Philox values one residual_norm_forward draws per subsequence (the generator's increment).
constexpr uint64_t kResidualNormPhiloxIncrement = 4;

// s_out = s_in + dropout(h) (fp32; dropout keeps with probability `keep` and scales by 1/keep,
// rounded to h's dtype, as ATen's dropout is) and y = layer_norm(s_out) * gamma + beta in h's
// dtype, with mean and rstd [rows] for backward. s_in, s_out: fp32 [rows, width]; h, y: `dtype`;
// width a multiple of 128 (residual_norm_width_supported). keep == 1: no random numbers.
bool residual_norm_width_supported(int64_t width);
const char* residual_norm_forward(DType dtype, const float* s_in, const void* h, const float* gamma, const float* beta,
                                  int64_t rows, int64_t width, float keep, Philox rng, float eps, float* s_out,
                                  void* y, float* mean, float* rstd, void* stream);
// ds = ds_out + d layer_norm / d s_out . dy (ds_out may be null: zero); dh = dropout's backward
// of ds rounded to h's dtype (the same mask: the same `rng`); dgamma, dbeta summed over rows
// through `partials` (residual_norm_partials(dtype, rows, width) floats of scratch; the count
// depends on the device's SMs), written or, with `add`, added to what they hold.
int64_t residual_norm_partials(DType dtype, int64_t rows, int64_t width);
const char* residual_norm_backward(DType dtype, const void* dy, const float* ds_out, const float* s_out,
                                   const float* mean, const float* rstd, const float* gamma, int64_t rows,
                                   int64_t width, float keep, Philox rng, float* ds, void* dh, float* partials,
                                   float* dgamma, float* dbeta, bool add, void* stream);

// Where the column-sum kernels below put the fp32 sum of each column c: p[c] = the sum rounded to
// the kernel's dtype (kStore), p[c] = the sum in fp32 (kStoreF32), or p[c] += it in fp32 (kAddF32:
// a bias's fp32 .grad accumulating).
struct SumsOut {
  enum Mode { kStore, kStoreF32, kAddF32 };
  void* p = nullptr;
  Mode mode = kStore;
};
// gu = ga * gelu_tanh'(u) in `dtype` (fp16 or bf16), and the sums over rows of gu[., c] (the
// rounded gu, summed in fp32) to `sums`, through `partials` (column_sums_partials(rows, width)
// floats of scratch, of which the kernels use up to one wave of blocks' worth). [rows, width] contiguous, width a multiple of 8, every pointer 16-byte
// aligned.
int64_t column_sums_partials(int64_t rows, int64_t width);
const char* gelu_backward_sums(DType dtype, const void* ga, const void* u, int64_t rows, int64_t width, void* gu,
                               float* partials, SumsOut sums, void* stream);
// The sums over rows of g[., c] (g fp16 or bf16) to `sums`, through `partials` as above; the
// same layout rules.
const char* column_sums(DType dtype, const void* g, int64_t rows, int64_t width, float* partials, SumsOut sums,
                        void* stream);
// The gradient of a [batch, seq, 3 x heads x head_dim] projection that was split into q, k and v
// and viewed as [batch, heads, seq, head_dim] each: out[b * seq + t, s * C + h * D + d] =
// p[s][b, h, t, d] (C = heads x head_dim, D = head_dim), contiguous, and its column sums (the
// projection's bias gradient) as above, in one pass. Each part: head_dim contiguous (stride 1),
// the other strides in elements; D a multiple of 8 and every part 16-byte aligned.
struct QkvParts {
  const void* p[3];
  int64_t stride_b[3], stride_h[3], stride_t[3];
  int64_t batch, heads, seq, head_dim;
};
const char* qkv_gather_sums(DType dtype, const QkvParts& parts, void* out, float* partials, SumsOut sums,
                            void* stream);

// dst[i] = src[i] rounded to `dtype` (fp16 or bf16) for i < n, for every entry of `chunks` (a
// device array of `count`), one block each: kernels/param_casts.h's refresh.
struct CastChunk {
  const float* src;
  void* dst;
  int64_t n;
};
const char* cast_chunks(DType dtype, const CastChunk* chunks, int64_t count, void* stream);

// An embedding's gradient added into grad [vocab, width] (fp32): grad[t] += the sum of the rows
// g[perm[j]] (fp32 [n, width]) over the positions j with sorted[j] == t, in the order of j, so
// the same bits every run. sorted: the n looked-up tokens in ascending order, perm: where each
// was (a stable sort's values and indices). Through `scratch`
// (embedding_backward_scratch(n, width) floats). width a multiple of 4, g and grad 16-byte aligned.
int64_t embedding_backward_scratch(int64_t n, int64_t width);
const char* embedding_backward_add(const int64_t* sorted, const int64_t* perm, const float* g, int64_t n,
                                   int64_t width, float* grad, float* scratch, void* stream);

// Training BatchNorm over NHWC activations viewed as [rows, channels] (contiguous, fp16 or bf16,
// every pointer 16-byte aligned, channels a power of two from 8 to 2048: bn_channels_supported):
// y = relu(x * scale + shift [+ z]) rounded once (relu false: no ReLU; z null: no add; an add
// comes with the ReLU), where scale = weight * invstd and shift = bias - mean * scale from the
// batch's mean and biased variance (fp32 sums over the rows); mean, invstd, scale and shift [C]
// written for backward; running_mean / running_var (null: none) updated as ATen's BatchNorm does
// (momentum, unbiased variance). Through `partials` (bn_partials(rows, channels) floats).
bool bn_channels_supported(int64_t channels);
int64_t bn_partials(int64_t rows, int64_t channels);
const char* bn_forward(DType dtype, const void* x, const void* z, const float* weight, const float* bias,
                       int64_t rows, int64_t channels, bool relu, float eps, float momentum, float* running_mean,
                       float* running_var, float* partials, float* mean, float* invstd, float* scale, float* shift,
                       void* y, void* stream);
// Its backward from dy: dx, dz (= the gradient past the ReLU, with the add; y is read only then),
// dweight and dbias (fp32 [C]; written, or with `accumulate` added to what they hold; null: not
// wanted), through `partials` as above and `coef` (2 x channels floats).
const char* bn_backward(DType dtype, const void* x, const void* y, const void* dy, const float* mean,
                        const float* invstd, const float* scale, const float* shift, int64_t rows, int64_t channels,
                        bool relu, bool add, float* partials, float* coef, float* dweight, float* dbias,
                        bool accumulate, void* dz, void* dx, void* stream);
// y = relu(x * scale + shift) again, the forward's kernel and rounding (the same bits as
// bn_forward's y without the add): a BatchNorm + ReLU's output remade from its input and the
// scale and shift bn_forward wrote, for a consumer that kept those instead of y.
const char* bn_relu_remake(DType dtype, const void* x, const float* scale, const float* shift, int64_t rows,
                           int64_t channels, void* y, void* stream);

}  // namespace efftrain::kernels

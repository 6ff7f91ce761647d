#include "efftrain/kernels/mlp.h"

#include <optional>

#ifdef EFFTRAIN_WITH_CUBLASLT
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <atomic>

#include "efftrain/kernels/cublaslt.h"
#endif
#if defined(EFFTRAIN_WITH_CUBLASLT) && defined(EFFTRAIN_WITH_KERNELS)
#include "efftrain/kernels/glue.h"
#endif
#include "efftrain/kernels/linear.h"

namespace efftrain::kernels {

namespace {
std::optional<torch::Tensor> opt(const torch::Tensor& t) {
  return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt;
}
}  // namespace

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = linear(gelu_tanh(u), w, b), keeping u alone for backward: the GELU output (4 x width per
// token for GPT-2's MLP) is recomputed there instead of stored. Under autocast the linear ran in
// u's dtype on cast weights; backward (no autocast) casts the same way. The bias is optional: an
// autograd function takes no undefined tensor as an input.
struct GeluLinear : torch::autograd::Function<GeluLinear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& u, const torch::Tensor& w,
                               const std::optional<torch::Tensor>& b_in) {
    const auto b = b_in.value_or(torch::Tensor());
    auto y = linear(torch::gelu(u, "tanh"), w, b);
    ctx->save_for_backward({u, w, b});
    ctx->saved_data["dtype"] = static_cast<int64_t>(y.scalar_type());
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &u = s[0], &w = s[1], &b = s[2];
    const auto dt = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    auto g = grads[0].to(dt).reshape({-1, w.size(0)});
    auto uc = u.to(dt);
    auto a = torch::gelu(uc, "tanh").reshape({-1, w.size(1)});
    auto gw = g.t().mm(a).to(w.scalar_type());
    auto gb = b.defined() ? column_sums(g.contiguous()).to(b.scalar_type()) : torch::Tensor();
    auto ga = g.mm(w.to(dt)).view(u.sizes());
    return {at::gelu_backward(ga, uc, "tanh").to(u.scalar_type()), gw, gb};
  }
};

torch::Tensor aten_mlp(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                       const torch::Tensor& b2, bool keep_activation) {
  auto u = linear(x, w1, b1);
  return keep_activation ? linear(torch::gelu(u, "tanh"), w2, b2) : GeluLinear::apply(u, w2, opt(b2));
}

bool fusable(const torch::Tensor& x, int64_t width, int64_t hidden) {
#ifdef EFFTRAIN_WITH_CUBLASLT
  const auto dt = run_dtype(x);
  return x.is_cuda() && (dt == torch::kHalf || dt == torch::kBFloat16) && x.dim() >= 1 && x.size(-1) == width &&
         width % 8 == 0 && hidden % 8 == 0 && x.numel() > 0;
#else
  (void)x, (void)width, (void)hidden;
  return false;
#endif
}

#ifdef EFFTRAIN_WITH_CUBLASLT
std::atomic<bool> g_warned{false};

// a = gelu(u), u = x w^T + b for row-major x [n, width], w [hidden, width], b [hidden], a and u
// [n, hidden], in one cuBLASLt matmul with the GELU_AUX_BIAS epilogue, its algorithm as `how`
// asks (aten: as cublaslt). In cuBLASLt's column-major terms: a^T [hidden x n] = op(w) . x^T with
// op = transpose, u^T the epilogue's aux output. False (nothing enqueued) where cuBLASLt has no
// algorithm for it.
bool gelu_aux_bias(Matmul how, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                   torch::Tensor& a, torch::Tensor& u) {
  const int64_t n = x.size(0), width = x.size(1), hidden = w.size(0);
  const cudaDataType_t type = x.scalar_type() == torch::kHalf ? CUDA_R_16F : CUDA_R_16BF;
  LtProblem p(x.get_device());
  p.a = w.data_ptr(), p.b = x.data_ptr(), p.d = a.data_ptr();  // cuBLASLt's A, B, D
  p.transpose(CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  p.epilogue(CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
  p.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(b.data_ptr()));
  p.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, u.data_ptr());
  p.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, hidden);
  p.layout(p.la, type, width, hidden, width);  // w stored width x hidden
  p.layout(p.lb, type, width, n, width);       // x^T
  p.layout(p.ld, type, hidden, n, hidden);     // a^T
  p.key.push_back(lt_aligned(b.data_ptr()) && lt_aligned(u.data_ptr()));
  const auto algo = lt_algo(how == Matmul::aten ? Matmul::cublaslt : how, p, a);
  if (!algo) return false;
  lt_check(lt_launch(p, *algo, p.d, c10::cuda::getCurrentCUDAStream()), "matmul");
  return true;
}

// {gelu_backward(ga, u), the gradient of bias b (its column sums, as bias_grad gives it)}:
// kernels/column_sums.cu's one pass where it was built, else ATen's gelu_backward and bias_grad
// reading the result again.
std::pair<torch::Tensor, torch::Tensor> gelu_backward_with_sums(const torch::Tensor& ga, const torch::Tensor& u,
                                                                const torch::Tensor& b) {
#ifdef EFFTRAIN_WITH_KERNELS
  if (ga.is_contiguous() && u.is_contiguous() && ga.sizes() == u.sizes() && ga.scalar_type() == u.scalar_type() &&
      lt_aligned(ga.data_ptr()) && lt_aligned(u.data_ptr()) &&
      (b.scalar_type() == torch::kFloat || b.scalar_type() == u.scalar_type())) {  // u: fp16 or bf16, width % 8 == 0
    const int64_t n = u.size(0), hidden = u.size(1);
    auto gu = torch::empty_like(u);
    auto [out, sums] = bias_sums(b, u);
    auto partials = torch::empty({column_sums_partials(n, hidden)}, u.options().dtype(torch::kFloat));
    check_launch(gelu_backward_sums(dtype_of(u), ga.data_ptr(), u.data_ptr(), n, hidden, gu.data_ptr(),
                                    partials.data_ptr<float>(), out, stream()),
                 "GELU backward with column sums");
    return {gu, sums};
  }
#endif
  auto gu = at::gelu_backward(ga, u, "tanh");
  return {gu, bias_grad(b, gu)};
}

// Rows of a [..., width] tensor as a contiguous [rows, width] matrix.
torch::Tensor rows(const torch::Tensor& t) { return t.reshape({-1, t.size(-1)}).contiguous(); }

struct FusedMlp : torch::autograd::Function<FusedMlp> {
  // w1, b1, w2, b2 in the run dtype, detached; the *_own: the parameters themselves, whose
  // gradients weight_grad and bias_grad give (in their dtype, or added into their .grad).
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& w1,
                               const torch::Tensor& b1, const torch::Tensor& w2, const std::optional<torch::Tensor>& b2,
                               const torch::Tensor& w1_own, const torch::Tensor& b1_own, const torch::Tensor& w2_own,
                               const std::optional<torch::Tensor>& b2_own, bool keep_activation, int64_t how_in) {
    const auto how = static_cast<Matmul>(how_in);
    const c10::cuda::CUDAGuard guard(x_in.device());
    auto x = rows(x_in);
    const int64_t n = x.size(0), hidden = w1.size(0);
    auto a = torch::empty({n, hidden}, x.options()), u = torch::empty({n, hidden}, x.options());
    if (!gelu_aux_bias(how, x, w1, b1, a, u)) {
      if (!g_warned.exchange(true))
        TORCH_WARN("kernels::mlp: cuBLASLt has no GELU_AUX_BIAS algorithm for ", x.scalar_type(), " ", x.sizes(),
                   " x ", w1.sizes(), "; ATen's matmul and GELU run instead");
      at::addmm_out(u, b1, x, w1.t());
      a = torch::gelu(u, "tanh");
    }
    auto y_sizes = x_in.sizes().vec();
    y_sizes.back() = w2.size(0);
    ctx->save_for_backward({x, u, keep_activation ? a : torch::Tensor(), w1, w2, w1_own, b1_own, w2_own,
                            b2_own.value_or(torch::Tensor())});
    ctx->saved_data["x_sizes"] = x_in.sizes().vec();
    ctx->saved_data["how"] = how_in;
    return linear_mm(how, a, w2, b2.value_or(torch::Tensor())).view(y_sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &u = s[1], &w1 = s[3], &w2 = s[4];
    const c10::cuda::CUDAGuard guard(x.device());
    auto a = s[2].defined() ? s[2] : torch::gelu(u, "tanh");
    auto g = rows(grads[0].to(x.scalar_type()));
    const auto &w1_own = s[5], &b1_own = s[6], &w2_own = s[7], &b2_own = s[8];
    const auto how = static_cast<Matmul>(ctx->saved_data["how"].toInt());
    auto gw2 = ctx->needs_input_grad(7) ? weight_grad(w2_own, g, a, how) : torch::Tensor();
    auto gb2 = b2_own.defined() && ctx->needs_input_grad(8) ? bias_grad(b2_own, g) : torch::Tensor();
    auto [gu, gb1] = gelu_backward_with_sums(mm(how, g, w2), u, b1_own);
    auto gw1 = ctx->needs_input_grad(5) ? weight_grad(w1_own, gu, x, how) : torch::Tensor();
    auto gx = mm(how, gu, w1).view(ctx->saved_data["x_sizes"].toIntVector());
    const torch::Tensor none;
    return {gx, none, none, none, none, gw1, ctx->needs_input_grad(6) ? gb1 : none, gw2, gb2, none, none};
  }
};
#endif
}  // namespace

const char* mlp_path(const torch::Tensor& x, int64_t width, int64_t hidden) {
  return fusable(x, width, hidden) ? "cublaslt_epilogue" : "aten";
}

torch::Tensor mlp(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                  const torch::Tensor& b2, bool keep_activation, bool use_fused, Matmul how) {
#ifdef EFFTRAIN_WITH_CUBLASLT
  if (use_fused && b1.defined() && fusable(x, w1.size(1), w1.size(0)) && w2.size(1) == w1.size(0)) {
    const auto dt = run_dtype(x);
    return FusedMlp::apply(autocast_cast(dt, x), param_cast(dt, w1), param_cast(dt, b1), param_cast(dt, w2),
                           opt(param_cast(dt, b2)), w1, b1, w2, opt(b2), keep_activation, static_cast<int64_t>(how));
  }
#endif
  (void)use_fused, (void)how;
  return aten_mlp(x, w1, b1, w2, b2, keep_activation);
}

}  // namespace efftrain::kernels

#include "efftrain/kernels/mlp.h"

#include <optional>

#ifdef EFFTRAIN_WITH_CUBLASLT
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublasLt.h>

#include <atomic>
#include <map>
#include <mutex>
#include <tuple>
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
void lt_check(cublasStatus_t s, const char* what) {
  TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuBLASLt ", what, ": ", cublasLtGetStatusString(s));
}

template <typename T, cublasStatus_t (*Destroy)(T)>
struct Owned {
  T h = nullptr;
  ~Owned() {
    if (h) Destroy(h);
  }
};

// The heuristic's first algorithm per (device, rows, width, hidden, dtype, pointers 16-byte
// aligned); nullopt where cuBLASLt has none.
using Key = std::tuple<int, int64_t, int64_t, int64_t, int, bool>;
std::mutex g_algos_mutex;
std::map<Key, std::optional<cublasLtMatmulAlgo_t>> g_algos;
std::atomic<bool> g_warned{false};

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// a = gelu(u), u = x w^T + b for row-major x [n, width], w [hidden, width], b [hidden], a and u
// [n, hidden], in one cuBLASLt matmul with the GELU_AUX_BIAS epilogue. In cuBLASLt's column-major
// terms: a^T [hidden x n] = op(w) . x^T with op = transpose, u^T the epilogue's aux output. False
// (nothing enqueued) where cuBLASLt has no algorithm for it.
bool gelu_aux_bias(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, torch::Tensor& a,
                   torch::Tensor& u) {
  const int64_t n = x.size(0), width = x.size(1), hidden = w.size(0);
  const cudaDataType_t type = x.scalar_type() == torch::kHalf ? CUDA_R_16F : CUDA_R_16BF;
  Owned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy> op;
  lt_check(cublasLtMatmulDescCreate(&op.h, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul descriptor");
  const cublasOperation_t transpose = CUBLAS_OP_T;
  const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const void* bias = b.data_ptr();
  void* aux = u.data_ptr();
  const int64_t ld_aux = hidden;
  lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)), "transa");
  lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)), "epilogue");
  lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), "bias");
  lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)), "aux");
  lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld_aux, sizeof(ld_aux)), "aux ld");
  using Layout = Owned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
  Layout lw, lx, la;  // w stored width x hidden, x^T width x n, a^T hidden x n
  lt_check(cublasLtMatrixLayoutCreate(&lw.h, type, width, hidden, width), "layout w");
  lt_check(cublasLtMatrixLayoutCreate(&lx.h, type, width, n, width), "layout x");
  lt_check(cublasLtMatrixLayoutCreate(&la.h, type, hidden, n, hidden), "layout a");

  const auto handle = at::cuda::getCurrentCUDABlasLtHandle();
  const size_t workspace_size = at::cuda::getCUDABlasLtWorkspaceSize();
  const bool all_aligned =
      aligned(x.data_ptr()) && aligned(w.data_ptr()) && aligned(bias) && aligned(aux) && aligned(a.data_ptr());
  const Key key{x.get_device(), n, width, hidden, static_cast<int>(type), all_aligned};
  std::optional<cublasLtMatmulAlgo_t> algo;
  {
    std::lock_guard<std::mutex> lock(g_algos_mutex);
    auto it = g_algos.find(key);
    if (it == g_algos.end()) {
      Owned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy> pref;
      lt_check(cublasLtMatmulPreferenceCreate(&pref.h), "preference");
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_size,
                                                    sizeof(workspace_size)),
               "workspace size");
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      const auto s = cublasLtMatmulAlgoGetHeuristic(handle, op.h, lw.h, lx.h, la.h, la.h, pref.h, 1, &result, &found);
      it = g_algos.emplace(key, s == CUBLAS_STATUS_SUCCESS && found > 0 ? std::optional(result.algo) : std::nullopt)
               .first;
    }
    algo = it->second;
  }
  if (!algo) return false;
  const float one = 1.0f, zero = 0.0f;
  lt_check(cublasLtMatmul(handle, op.h, &one, w.data_ptr(), lw.h, x.data_ptr(), lx.h, &zero, a.data_ptr(), la.h,
                          a.data_ptr(), la.h, &*algo, at::cuda::getCUDABlasLtWorkspace(), workspace_size,
                          c10::cuda::getCurrentCUDAStream()),
           "matmul");
  return true;
}

// {gelu_backward(ga, u), the gradient of bias b (its column sums, as bias_grad gives it)}:
// kernels/column_sums.cu's one pass where it was built, else ATen's gelu_backward and bias_grad
// reading the result again.
std::pair<torch::Tensor, torch::Tensor> gelu_backward_with_sums(const torch::Tensor& ga, const torch::Tensor& u,
                                                                const torch::Tensor& b) {
#ifdef EFFTRAIN_WITH_KERNELS
  if (ga.is_contiguous() && u.is_contiguous() && ga.sizes() == u.sizes() && ga.scalar_type() == u.scalar_type() &&
      aligned(ga.data_ptr()) && aligned(u.data_ptr()) &&
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
                               const std::optional<torch::Tensor>& b2_own, bool keep_activation) {
    const c10::cuda::CUDAGuard guard(x_in.device());
    auto x = rows(x_in);
    const int64_t n = x.size(0), hidden = w1.size(0);
    auto a = torch::empty({n, hidden}, x.options()), u = torch::empty({n, hidden}, x.options());
    if (!gelu_aux_bias(x, w1, b1, a, u)) {
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
    return at::linear(a, w2, b2).view(y_sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &u = s[1], &w1 = s[3], &w2 = s[4];
    const c10::cuda::CUDAGuard guard(x.device());
    auto a = s[2].defined() ? s[2] : torch::gelu(u, "tanh");
    auto g = rows(grads[0].to(x.scalar_type()));
    const auto &w1_own = s[5], &b1_own = s[6], &w2_own = s[7], &b2_own = s[8];
    auto gw2 = ctx->needs_input_grad(7) ? weight_grad(w2_own, g, a) : torch::Tensor();
    auto gb2 = b2_own.defined() && ctx->needs_input_grad(8) ? bias_grad(b2_own, g) : torch::Tensor();
    auto [gu, gb1] = gelu_backward_with_sums(g.mm(w2), u, b1_own);
    auto gw1 = ctx->needs_input_grad(5) ? weight_grad(w1_own, gu, x) : torch::Tensor();
    auto gx = gu.mm(w1).view(ctx->saved_data["x_sizes"].toIntVector());
    const torch::Tensor none;
    return {gx, none, none, none, none, gw1, ctx->needs_input_grad(6) ? gb1 : none, gw2, gb2, none};
  }
};
#endif
}  // namespace

const char* mlp_path(const torch::Tensor& x, int64_t width, int64_t hidden) {
  return fusable(x, width, hidden) ? "cublaslt_epilogue" : "aten";
}

torch::Tensor mlp(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                  const torch::Tensor& b2, bool keep_activation, bool use_fused) {
#ifdef EFFTRAIN_WITH_CUBLASLT
  if (use_fused && b1.defined() && fusable(x, w1.size(1), w1.size(0)) && w2.size(1) == w1.size(0)) {
    const auto dt = run_dtype(x);
    return FusedMlp::apply(autocast_cast(dt, x), param_cast(dt, w1), param_cast(dt, b1), param_cast(dt, w2),
                           opt(param_cast(dt, b2)), w1, b1, w2, opt(b2), keep_activation);
  }
#endif
  (void)use_fused;
  return aten_mlp(x, w1, b1, w2, b2, keep_activation);
}

}  // namespace efftrain::kernels

#include "efftrain/kernels/dense.h"

#include <ATen/autocast_mode.h>

#ifdef EFFTRAIN_WITH_CUBLASLT
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublasLt.h>

#include <map>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#endif

namespace efftrain::kernels {

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::optional<torch::Tensor> opt(const torch::Tensor& t) {
  return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt;
}
// at::linear, not the C++ frontend's Linear::forward: for inputs of more than two dimensions that
// runs matmul and then a broadcast `out += bias` (models/gpt2.cpp says what it cost).
torch::Tensor aten_dense(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return at::linear(x, w, opt(b));
}

// y = linear(gelu_tanh(u), w, b), keeping u alone for backward: the GELU output (4 x width per
// token for GPT-2's MLP) is recomputed there instead of stored. Under autocast the linear ran in
// u's dtype on cast weights; backward (no autocast) casts the same way.
struct GeluLinear : torch::autograd::Function<GeluLinear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& u, const torch::Tensor& w,
                               const torch::Tensor& b) {
    auto y = aten_dense(torch::gelu(u, "tanh"), w, b);
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
    auto gb = b.defined() ? g.sum(0).to(b.scalar_type()) : torch::Tensor();
    auto ga = g.mm(w.to(dt)).view(u.sizes());
    return {at::gelu_backward(ga, uc, "tanh").to(u.scalar_type()), gw, gb};
  }
};

torch::Tensor aten_mlp(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1, const torch::Tensor& w2,
                       const torch::Tensor& b2, bool keep_activation) {
  auto u = aten_dense(x, w1, b1);
  return keep_activation ? aten_dense(torch::gelu(u, "tanh"), w2, b2) : GeluLinear::apply(u, w2, b2);
}

// The dtype a linear on x runs in: autocast's on CUDA where it is on, else x's.
at::ScalarType run_dtype(const torch::Tensor& x) {
  if (x.is_cuda() && at::autocast::is_autocast_enabled(at::kCUDA)) return at::autocast::get_autocast_dtype(at::kCUDA);
  return x.scalar_type();
}

bool fusable(const torch::Tensor& x, int64_t in, int64_t out) {
#ifdef EFFTRAIN_WITH_CUBLASLT
  const auto dt = run_dtype(x);
  return x.is_cuda() && (dt == torch::kHalf || dt == torch::kBFloat16) && x.dim() >= 1 && x.size(-1) == in &&
         in % 8 == 0 && out % 8 == 0 && x.numel() > 0;
#else
  (void)x, (void)in, (void)out;
  return false;
#endif
}

#ifdef EFFTRAIN_WITH_CUBLASLT
void lt_check(cublasStatus_t s, const char* what) {
  TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuBLASLt ", what, ": ", cublasLtGetStatusString(s));
}

// One cuBLASLt matmul in its own (column-major) terms: D[m x n] = op(A) op(B), fp32 accumulation,
// A, B and D of one type, with an epilogue. A row-major [r, c] tensor is the column-major c x r
// matrix with leading dimension c.
struct Gemm {
  bool ta = false, tb = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  void* d = nullptr;
  int64_t ldd = 0;
  cudaDataType_t type = CUDA_R_16BF;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;  // BIAS, GELU_AUX_BIAS: read; BGRADB: written (D's type)
  void* aux = nullptr;         // GELU_AUX_BIAS: u written (D's type, D's shape)
  int64_t ldaux = 0;
};

template <typename T, cublasStatus_t (*Destroy)(T)>
struct Owned {
  T h = nullptr;
  ~Owned() {
    if (h) Destroy(h);
  }
};

// The heuristic's first choice per call shape (nullopt: cuBLASLt has none), per device.
using Key = std::tuple<int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, bool>;
std::mutex g_algos_mutex;
std::map<Key, std::optional<cublasLtMatmulAlgo_t>> g_algos;

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Enqueues the matmul on the current stream; false (nothing enqueued) where cuBLASLt has no
// algorithm for it.
bool run(const Gemm& g) {
  Owned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy> op;
  lt_check(cublasLtMatmulDescCreate(&op.h, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul descriptor");
  const cublasOperation_t ta = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "transa");
  lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "transb");
  lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_EPILOGUE, &g.epilogue, sizeof(g.epilogue)),
           "epilogue");
  if (g.bias)
    lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)), "bias");
  if (g.aux) {
    lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof(g.aux)),
             "aux");
    lt_check(cublasLtMatmulDescSetAttribute(op.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &g.ldaux, sizeof(g.ldaux)),
             "aux ld");
  }
  using Layout = Owned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
  Layout la, lb, ld;
  lt_check(cublasLtMatrixLayoutCreate(&la.h, g.type, g.ta ? g.k : g.m, g.ta ? g.m : g.k, g.lda), "layout A");
  lt_check(cublasLtMatrixLayoutCreate(&lb.h, g.type, g.tb ? g.n : g.k, g.tb ? g.k : g.n, g.ldb), "layout B");
  lt_check(cublasLtMatrixLayoutCreate(&ld.h, g.type, g.m, g.n, g.ldd), "layout D");

  const auto handle = at::cuda::getCurrentCUDABlasLtHandle();
  const size_t workspace_size = at::cuda::getCUDABlasLtWorkspaceSize();
  int device = 0;
  AT_CUDA_CHECK(cudaGetDevice(&device));
  const bool all_aligned = aligned(g.a) && aligned(g.b) && aligned(g.d) && (!g.bias || aligned(g.bias)) &&
                           (!g.aux || aligned(g.aux));
  const Key key{device, g.ta, g.tb, g.m, g.n, g.k, g.lda, g.ldb, g.ldd, static_cast<int>(g.type),
                static_cast<int>(g.epilogue), all_aligned};
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
      const auto s = cublasLtMatmulAlgoGetHeuristic(handle, op.h, la.h, lb.h, ld.h, ld.h, pref.h, 1, &result, &found);
      it = g_algos.emplace(key, s == CUBLAS_STATUS_SUCCESS && found > 0 ? std::optional(result.algo) : std::nullopt)
               .first;
    }
    algo = it->second;
  }
  if (!algo) return false;
  const float one = 1.0f, zero = 0.0f;
  lt_check(cublasLtMatmul(handle, op.h, &one, g.a, la.h, g.b, lb.h, &zero, g.d, ld.h, g.d, ld.h, &*algo,
                          at::cuda::getCUDABlasLtWorkspace(), workspace_size, c10::cuda::getCurrentCUDAStream()),
           "matmul");
  return true;
}

// Once cuBLASLt had no algorithm for an epilogue, that piece runs as ATen's ops; warned once each.
void refused(const char* what) {
  static std::mutex m;
  static std::map<std::string, bool> said;
  std::lock_guard<std::mutex> lock(m);
  if (said.emplace(what, true).second)
    TORCH_WARN("kernels::dense: cuBLASLt has no algorithm for ", what, "; running ATen's ops for it");
}

cudaDataType_t lt_type(const torch::Tensor& t) { return t.scalar_type() == torch::kHalf ? CUDA_R_16F : CUDA_R_16BF; }

// Rows of a [..., width] tensor as a contiguous [rows, width] matrix.
torch::Tensor rows(const torch::Tensor& t) { return t.reshape({-1, t.size(-1)}).contiguous(); }

// gw = g^T x and gb = column sums of g, for g [rows, out], x [rows, in]: gb in the epilogue (BGRADB).
std::pair<torch::Tensor, torch::Tensor> weight_grads(const torch::Tensor& g, const torch::Tensor& x, bool with_bias) {
  const int64_t n = g.size(0), out = g.size(1), in = x.size(1);
  auto gw = torch::empty({out, in}, g.options());
  static const bool bgradb = [] {
    const char* v = std::getenv("EFFTRAIN_DENSE_BGRADB");
    return v == nullptr || std::string(v) != "0";
  }();
  if (with_bias && !bgradb) return {at::mm_out(gw, g.t(), x), g.sum(0)};
  if (with_bias) {
    auto gb = torch::empty({out}, g.options());
    Gemm m;  // gw^T [in x out] = x^T [in x n] . g [n x out]
    m.tb = true;
    m.m = in, m.n = out, m.k = n;
    m.a = x.data_ptr(), m.lda = in;
    m.b = g.data_ptr(), m.ldb = out;
    m.d = gw.data_ptr(), m.ldd = in;
    m.type = lt_type(g);
    m.epilogue = CUBLASLT_EPILOGUE_BGRADB;
    m.bias = gb.data_ptr();
    if (run(m)) return {gw, gb};
    refused("the bias gradient (BGRADB)");
    return {at::mm_out(gw, g.t(), x), g.sum(0)};
  }
  return {at::mm_out(gw, g.t(), x), torch::Tensor()};
}

// autocast's cast of t (cached for the weights, as at::linear's).
torch::Tensor cast(at::ScalarType dt, const torch::Tensor& t) {
  return t.defined() ? at::autocast::cached_cast(dt, t, at::kCUDA) : t;
}

struct Dense : torch::autograd::Function<Dense> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const std::optional<torch::Tensor>& b) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["bias"] = b.has_value();
    return at::linear(x, w, b);  // cuBLAS adds the bias in its epilogue already
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &w = s[1];
    const c10::cuda::CUDAGuard guard(x.device());
    auto g = rows(grads[0].to(x.scalar_type()));
    auto gx = g.mm(w).view(x.sizes());
    auto [gw, gb] = weight_grads(g, rows(x), ctx->saved_data["bias"].toBool());
    return {gx, gw, gb};
  }
};

// y = gelu(x w1^T + b1) w2^T + b2 with GELU in the matmuls' epilogues (dense.h).
struct DenseGeluDense : torch::autograd::Function<DenseGeluDense> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& w1,
                               const torch::Tensor& b1, const torch::Tensor& w2, const std::optional<torch::Tensor>& b2,
                               bool keep_activation) {
    const c10::cuda::CUDAGuard guard(x_in.device());
    auto x = rows(x_in);
    const int64_t n = x.size(0), in = x.size(1), hidden = w1.size(0);
    auto a = torch::empty({n, hidden}, x.options()), u = torch::empty({n, hidden}, x.options());
    Gemm m;  // a^T [hidden x n] = gelu(w1 [hidden x in, stored as in x hidden] . x^T [in x n] + b1), u^T kept
    m.ta = true;
    m.m = hidden, m.n = n, m.k = in;
    m.a = w1.data_ptr(), m.lda = in;
    m.b = x.data_ptr(), m.ldb = in;
    m.d = a.data_ptr(), m.ldd = hidden;
    m.type = lt_type(x);
    m.epilogue = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    m.bias = b1.data_ptr();
    m.aux = u.data_ptr(), m.ldaux = hidden;
    bool fused = run(m);
    if (!fused) {
      refused("GELU in the matmul (GELU_AUX_BIAS)");
      at::addmm_out(u, b1, x, w1.t());
      a = torch::gelu(u, "tanh");
    }
    auto y = at::linear(a, w2, b2);
    auto out_sizes = x_in.sizes().vec();
    out_sizes.back() = w2.size(0);
    ctx->save_for_backward({x, u, keep_activation ? a : torch::Tensor(), w1, w2});
    ctx->saved_data["bias2"] = b2.has_value();
    ctx->saved_data["x_sizes"] = x_in.sizes().vec();
    return y.view(out_sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &u = s[1], &w1 = s[3], &w2 = s[4];
    const c10::cuda::CUDAGuard guard(x.device());
    auto a = s[2].defined() ? s[2] : torch::gelu(u, "tanh");
    auto g = rows(grads[0].to(x.scalar_type()));
    auto [gw2, gb2] = weight_grads(g, a, ctx->saved_data["bias2"].toBool());
    // GELU's derivative as ATen's kernel: cuBLASLt's DGELU_BGRAD epilogue ran as a separate
    // kernel at a third of the bandwidth on an H200 (7.6 ms per GPT-2 small step against 1.9).
    auto gu = at::gelu_backward(g.mm(w2), u, "tanh");
    auto [gw1, gb1] = weight_grads(gu, x, true);
    auto gx = gu.mm(w1).view(ctx->saved_data["x_sizes"].toIntVector());
    return {gx, gw1, gb1, gw2, gb2, torch::Tensor()};
  }
};
#endif
}  // namespace

const char* dense_path(const torch::Tensor& x, int64_t in_features, int64_t out_features) {
  return fusable(x, in_features, out_features) ? "cublaslt" : "aten";
}

torch::Tensor dense(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, bool use_fused) {
#ifdef EFFTRAIN_WITH_CUBLASLT
  if (use_fused && fusable(x, w.size(1), w.size(0))) {
    const auto dt = run_dtype(x);
    return Dense::apply(cast(dt, x), cast(dt, w), opt(cast(dt, b)));
  }
#endif
  (void)use_fused;
  return aten_dense(x, w, b);
}

torch::Tensor dense_gelu_dense(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                               const torch::Tensor& w2, const torch::Tensor& b2, bool keep_activation, bool use_fused) {
#ifdef EFFTRAIN_WITH_CUBLASLT
  if (use_fused && b1.defined() && fusable(x, w1.size(1), w1.size(0)) && w2.size(1) == w1.size(0) &&
      w2.size(0) % 8 == 0) {
    const auto dt = run_dtype(x);
    return DenseGeluDense::apply(cast(dt, x), cast(dt, w1), cast(dt, b1), cast(dt, w2), opt(cast(dt, b2)),
                                 keep_activation);
  }
#endif
  (void)use_fused;
  return aten_mlp(x, w1, b1, w2, b2, keep_activation);
}

}  // namespace efftrain::kernels

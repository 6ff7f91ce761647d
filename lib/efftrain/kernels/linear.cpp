#include "efftrain/kernels/linear.h"

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/graph_task.h>

#include <optional>

#include "efftrain/kernels/param_casts.h"

#ifdef EFFTRAIN_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "efftrain/kernels/glue.h"
#endif

namespace efftrain::kernels {

at::ScalarType run_dtype(const torch::Tensor& x) {
  if (x.is_cuda() && at::autocast::is_autocast_enabled(at::kCUDA)) return at::autocast::get_autocast_dtype(at::kCUDA);
  return x.scalar_type();
}

torch::Tensor autocast_cast(at::ScalarType dt, const torch::Tensor& t) {
  return t.defined() ? at::autocast::cached_cast(dt, t, at::kCUDA) : t;
}

torch::Tensor param_cast(at::ScalarType dt, const torch::Tensor& t) {
  if (!t.defined()) return t;
  if (t.scalar_type() != dt && at::autocast::is_autocast_enabled(at::kCUDA))
    if (auto copy = ParamCasts::current(t, dt); copy.defined()) return copy;
  return autocast_cast(dt, t).detach();
}

#ifdef EFFTRAIN_WITH_KERNELS
namespace {
// Whether the column-sum kernels take g [rows, width]: CUDA, fp16/bf16, contiguous, width a
// multiple of 8, 16-byte aligned.
bool sums_kernel_takes(const torch::Tensor& g) {
  const auto dt = g.scalar_type();
  return g.is_cuda() && (dt == torch::kHalf || dt == torch::kBFloat16) && g.dim() == 2 && g.is_contiguous() &&
         g.size(0) > 0 && g.size(1) % 8 == 0 && aligned16(g);
}

// g's column sums by kernels/column_sums.cu to `out` (sums_kernel_takes(g) holds).
void launch_column_sums(const torch::Tensor& g, SumsOut out, const char* what) {
  const c10::cuda::CUDAGuard guard(g.device());
  const int64_t rows = g.size(0), width = g.size(1);
  auto partials = torch::empty({column_sums_partials(rows, width)}, g.options().dtype(torch::kFloat));
  check_launch(kernels::column_sums(dtype_of(g), g.data_ptr(), rows, width, partials.data_ptr<float>(), out, stream()),
               what);
}
}  // namespace
#endif

torch::Tensor column_sums(const torch::Tensor& g) {
  TORCH_CHECK(g.dim() == 2, "column_sums: expected a [rows, width] matrix");
#ifdef EFFTRAIN_WITH_KERNELS
  if (sums_kernel_takes(g)) {
    auto sums = torch::empty({g.size(1)}, g.options());
    launch_column_sums(g, SumsOut{sums.data_ptr()}, "column sums");
    return sums;
  }
#endif
  return g.sum(0);
}

torch::Tensor bias_grad(const torch::Tensor& b, const torch::Tensor& g) {
#ifdef EFFTRAIN_WITH_KERNELS
  if (sums_kernel_takes(g) && (b.scalar_type() == torch::kFloat || b.scalar_type() == g.scalar_type())) {
    auto [out, sums] = bias_sums(b, g);
    launch_column_sums(g, out, "bias gradient");
    return sums;
  }
#endif
  return g.sum(0).to(b.scalar_type());
}

bool grad_in_place(const torch::Tensor& w, const torch::Device& device, bool any_layout) {
  const auto* exec = torch::autograd::get_current_graph_task_exec_info();
  const auto& acc = w.grad();
  return acc.defined() && (exec == nullptr || exec->empty()) && !torch::GradMode::is_enabled() &&
         acc.scalar_type() == w.scalar_type() && acc.sizes() == w.sizes() && (any_layout || acc.is_contiguous()) &&
         acc.device() == device;
}

torch::Tensor weight_grad(const torch::Tensor& w, const torch::Tensor& g, const torch::Tensor& x, Matmul how) {
  const auto dt = w.scalar_type();
  const auto shaped = [&](const torch::Tensor& m) { return w.dim() == 2 ? m : m.view(w.sizes()); };
  if (g.scalar_type() != dt && !g.is_cuda()) return shaped(g.t().mm(x).to(dt));  // fp32 out of fp16/bf16: CUDA only
  if (grad_in_place(w, g.device())) {
    auto acc = w.dim() == 2 ? w.grad() : w.grad().view({g.size(1), x.size(1)});
    addmm_(how, acc, g.t(), x);
    return {};
  }
  return shaped(mm(how, g.t(), x, dt));
}

namespace {
std::optional<torch::Tensor> opt(const torch::Tensor& t) {
  return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt;
}

// [B, T, 3C] -> q, k, v [B, heads, T, D] views.
std::array<torch::Tensor, 3> split_heads(const torch::Tensor& qkv, int64_t heads) {
  const int64_t B = qkv.size(0), T = qkv.size(1), C = qkv.size(2) / 3, D = C / heads;
  auto parts = qkv.split(C, 2);
  std::array<torch::Tensor, 3> out;
  for (int i = 0; i < 3; ++i) out[i] = parts[i].view({B, T, heads, D}).transpose(1, 2);
  return out;
}

#ifdef EFFTRAIN_WITH_KERNELS
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// at::linear with its backward written out: ATen's addmm backward makes the same two matmuls
// (g w and g^T x, in these layouts); the weight's gradient comes from weight_grad, the bias's
// from bias_grad. `wr`, `br`: the weight and bias in the run dtype, detached; the gradients go to
// the parameters themselves, `w` and `b`, in their own dtype.
struct BiasLinear : torch::autograd::Function<BiasLinear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& wr,
                               const torch::Tensor& br, const torch::Tensor& w, const torch::Tensor& b, int64_t how) {
    ctx->save_for_backward({x, wr, w, b});
    ctx->saved_data["how"] = how;
    return linear_mm(static_cast<Matmul>(how), x, wr, br);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &wr = s[1], &w = s[2], &b = s[3];
    const auto how = static_cast<Matmul>(ctx->saved_data["how"].toInt());
    auto g = grads[0].reshape({-1, grads[0].size(-1)}).contiguous();
    torch::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) gx = mm(how, g, wr).view(x.sizes());
    if (ctx->needs_input_grad(3)) gw = weight_grad(w, g, x.reshape({-1, x.size(-1)}), how);
    if (ctx->needs_input_grad(4)) gb = bias_grad(b, g);
    return {gx, torch::Tensor(), torch::Tensor(), gw, gb, torch::Tensor()};
  }
};

// qkv_linear as one function: the three views are its outputs, and backward takes their three
// gradients in whatever strides attention's backward left them.
struct QkvLinear : torch::autograd::Function<QkvLinear> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& wr,
                               const torch::Tensor& br, const torch::Tensor& w, const torch::Tensor& b, int64_t heads,
                               int64_t how) {
    ctx->save_for_backward({x, wr, w, b});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["how"] = how;
    auto qkv = split_heads(linear_mm(static_cast<Matmul>(how), x, wr, br), heads);
    return {qkv[0], qkv[1], qkv[2]};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &wr = s[1], &w = s[2], &b = s[3];
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const int64_t B = x.size(0), T = x.size(1), C3 = wr.size(0), D = C3 / 3 / heads;
    const auto opts = x.options().dtype(wr.scalar_type());
    QkvParts parts{};
    std::array<torch::Tensor, 3> g;
    for (int i = 0; i < 3; ++i) {
      g[i] = grads[i].defined() ? grads[i] : torch::zeros({B, heads, T, D}, opts);
      if (g[i].stride(3) != 1 || !aligned16(g[i]) || g[i].scalar_type() != wr.scalar_type())
        g[i] = g[i].contiguous().to(wr.scalar_type());
      parts.p[i] = g[i].data_ptr();
      parts.stride_b[i] = g[i].stride(0);
      parts.stride_h[i] = g[i].stride(1);
      parts.stride_t[i] = g[i].stride(2);
    }
    parts.batch = B, parts.heads = heads, parts.seq = T, parts.head_dim = D;
    auto dqkv = torch::empty({B * T, C3}, opts);
    auto [sums, gb] = bias_sums(b, dqkv);
    auto partials = torch::empty({column_sums_partials(B * T, C3)}, opts.dtype(torch::kFloat));
    check_launch(qkv_gather_sums(dtype_of(dqkv), parts, dqkv.data_ptr(), partials.data_ptr<float>(), sums, stream()),
                 "q/k/v gradient gather with column sums");
    const auto how = static_cast<Matmul>(ctx->saved_data["how"].toInt());
    torch::Tensor gx, gw;
    if (ctx->needs_input_grad(0)) gx = mm(how, dqkv, wr).view(x.sizes());
    if (ctx->needs_input_grad(3)) gw = weight_grad(w, dqkv, x.reshape({-1, x.size(-1)}), how);
    return {gx, torch::Tensor(), torch::Tensor(), gw, ctx->needs_input_grad(4) ? gb : torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

// Whether linear(x, w, b) takes BiasLinear: the dtype it runs in, or nullopt.
std::optional<at::ScalarType> own_backward(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (!(b.defined() && b.requires_grad() && torch::GradMode::is_enabled() && x.is_cuda() && x.numel() > 0 &&
        w.size(0) % 8 == 0))
    return std::nullopt;
  const auto dt = run_dtype(x);
  if (dt != torch::kHalf && dt != torch::kBFloat16) return std::nullopt;
  return dt;
}
#endif
}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, Matmul how) {
#ifdef EFFTRAIN_WITH_KERNELS
  if (const auto dt = own_backward(x, w, b))
    return BiasLinear::apply(autocast_cast(*dt, x), param_cast(*dt, w), param_cast(*dt, b), w, b,
                             static_cast<int64_t>(how));
#endif
  if (how != Matmul::aten && !torch::GradMode::is_enabled()) {  // no gradient taken: the product alone
    const auto dt = run_dtype(x);
    return linear_mm(how, autocast_cast(dt, x), param_cast(dt, w), param_cast(dt, b));
  }
  return at::linear(x, w, opt(b));
}

std::array<torch::Tensor, 3> qkv_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                        int64_t heads, Matmul how) {
  TORCH_CHECK(x.dim() == 3 && w.size(0) % (3 * heads) == 0, "qkv_linear: x [B, T, C] and w [3 x heads x D, C] expected");
#ifdef EFFTRAIN_WITH_KERNELS
  const auto dt = own_backward(x, w, b);
  if (dt && (w.size(0) / 3 / heads) % 8 == 0) {
    auto out = QkvLinear::apply(autocast_cast(*dt, x), param_cast(*dt, w), param_cast(*dt, b), w, b, heads,
                                static_cast<int64_t>(how));
    return {out[0], out[1], out[2]};
  }
  return split_heads(linear(x, w, b, how), heads);
#else
  (void)how;
  return split_heads(at::linear(x, w, opt(b)), heads);
#endif
}

}  // namespace efftrain::kernels

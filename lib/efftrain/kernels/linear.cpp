#include "efftrain/kernels/linear.h"

#include <ATen/autocast_mode.h>

#include <optional>

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

torch::Tensor column_sums(const torch::Tensor& g) {
  TORCH_CHECK(g.dim() == 2, "column_sums: expected a [rows, width] matrix");
#ifdef EFFTRAIN_WITH_KERNELS
  const auto half = g.scalar_type() == torch::kHalf || g.scalar_type() == torch::kBFloat16;
  if (g.is_cuda() && half && g.is_contiguous() && g.size(0) > 0 && g.size(1) % 8 == 0 &&
      reinterpret_cast<uintptr_t>(g.data_ptr()) % 16 == 0) {
    const c10::cuda::CUDAGuard guard(g.device());
    const int64_t rows = g.size(0), width = g.size(1);
    auto sums = torch::empty({width}, g.options());
    auto partials = torch::empty({column_sums_partials(rows, width)}, g.options().dtype(torch::kFloat));
    check_launch(kernels::column_sums(dtype_of(g), g.data_ptr(), rows, width, partials.data_ptr<float>(),
                                      sums.data_ptr(), stream()),
                 "column sums");
    return sums;
  }
#endif
  return g.sum(0);
}

namespace {
std::optional<torch::Tensor> opt(const torch::Tensor& t) {
  return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt;
}

#ifdef EFFTRAIN_WITH_KERNELS
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// at::linear with its backward written out: ATen's addmm backward makes the same two matmuls
// (g w and g^T x, in these layouts); the bias gradient comes from column_sums.
struct BiasLinear : torch::autograd::Function<BiasLinear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& b) {
    ctx->save_for_backward({x, w});
    return at::linear(x, w, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &w = s[1];
    auto g = grads[0].reshape({-1, grads[0].size(-1)}).contiguous();
    torch::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) gx = g.mm(w).view(x.sizes());
    if (ctx->needs_input_grad(1)) gw = g.t().mm(x.reshape({-1, x.size(-1)}));
    if (ctx->needs_input_grad(2)) gb = column_sums(g);
    return {gx, gw, gb};
  }
};
#endif
}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
#ifdef EFFTRAIN_WITH_KERNELS
  if (b.defined() && b.requires_grad() && torch::GradMode::is_enabled() && x.is_cuda() && x.numel() > 0 &&
      w.size(0) % 8 == 0) {
    const auto dt = run_dtype(x);
    if (dt == torch::kHalf || dt == torch::kBFloat16)
      return BiasLinear::apply(autocast_cast(dt, x), autocast_cast(dt, w), autocast_cast(dt, b));
  }
#endif
  return at::linear(x, w, opt(b));
}

}  // namespace efftrain::kernels

#include "efftrain/kernels/conv.h"

#include "efftrain/kernels/linear.h"

namespace efftrain::kernels {

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// `wr`: the weight in the run dtype, detached; `w`: the parameter, whose gradient backward routes.
struct OwnWeightConv : torch::autograd::Function<OwnWeightConv> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& wr,
                               const torch::Tensor& w, int64_t stride, int64_t padding) {
    ctx->save_for_backward({x, wr, w});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    return at::convolution(x, wr, std::nullopt, {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0}, 1);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &wr = s[1], &w = s[2];
    const int64_t stride = ctx->saved_data["stride"].toInt(), padding = ctx->saved_data["padding"].toInt();
    const bool want_w = ctx->needs_input_grad(2);
    auto [gx, gw, gb] = at::convolution_backward(grads[0], x, wr, std::nullopt, {stride, stride}, {padding, padding},
                                                 {1, 1}, false, {0, 0}, 1, {ctx->needs_input_grad(0), want_w, false});
    torch::Tensor gw_out;
    if (want_w) {
      if (grad_in_place(w, gw.device())) w.grad().add_(gw);  // fp32 += fp16/bf16: one kernel
      else gw_out = gw.to(w.scalar_type());
    }
    return {gx, torch::Tensor(), gw_out, torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& w, int64_t stride, int64_t padding) {
  const auto dt = run_dtype(x);
  if (x.is_cuda() && torch::GradMode::is_enabled() && w.requires_grad() && w.is_leaf() &&
      w.scalar_type() == torch::kFloat && (dt == torch::kHalf || dt == torch::kBFloat16))
    return OwnWeightConv::apply(autocast_cast(dt, x), param_cast(dt, w), w, stride, padding);
  return at::conv2d(x, w, {}, {stride, stride}, {padding, padding});
}

}  // namespace efftrain::kernels

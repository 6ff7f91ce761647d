#include "efftrain/kernels/conv.h"

#include "efftrain/kernels/linear.h"

namespace efftrain::kernels {

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x for backward, or where `src` says how to remake it (bn_relu.h) its source: saved[0], saved[1]
// are x and an undefined tensor, or the source's x and statistics.
void save_input(AutogradContext* ctx, const torch::Tensor& x, const BnReluSource& src, torch::Tensor wr,
                torch::Tensor w) {
  ctx->save_for_backward({src ? src.x : x, src ? src.stats : torch::Tensor(), std::move(wr), std::move(w)});
}
torch::Tensor saved_input(const variable_list& s) { return s[1].defined() ? remake_bn_relu({s[0], s[1]}) : s[0]; }

// `wr`: the weight in the run dtype, detached; `w`: the parameter, whose gradient backward routes.
struct OwnWeightConv : torch::autograd::Function<OwnWeightConv> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& wr,
                               const torch::Tensor& w, int64_t stride, int64_t padding, const BnReluSource& src) {
    save_input(ctx, x, src, wr, w);
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    return at::convolution(x, wr, std::nullopt, {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0}, 1);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto x = saved_input(s);
    const auto &wr = s[2], &w = s[3];
    const int64_t stride = ctx->saved_data["stride"].toInt(), padding = ctx->saved_data["padding"].toInt();
    const bool want_w = ctx->needs_input_grad(2);
    auto [gx, gw, gb] = at::convolution_backward(grads[0], x, wr, std::nullopt, {stride, stride}, {padding, padding},
                                                 {1, 1}, false, {0, 0}, 1, {ctx->needs_input_grad(0), want_w, false});
    torch::Tensor gw_out;
    if (want_w) {
      if (grad_in_place(w, gw.device(), /*any_layout=*/true)) w.grad().add_(gw);  // fp32 += fp16/bf16: one kernel
      else gw_out = gw.to(w.scalar_type());
    }
    return {gx, torch::Tensor(), gw_out, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// [N, C, H, W] channels_last <-> its [N*H*W, C] matrix (views, no copy).
torch::Tensor pixels(const torch::Tensor& t) {
  return t.contiguous(torch::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({-1, t.size(1)});
}
torch::Tensor image(const torch::Tensor& m, const torch::IntArrayRef like, int64_t channels) {
  return m.view({like[0], like[2], like[3], channels}).permute({0, 3, 1, 2});
}

// `wr`: w in the run dtype, detached; `w`: the parameter.
struct Conv1x1 : torch::autograd::Function<Conv1x1> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& wr,
                               const torch::Tensor& w, bool pass_input, const BnReluSource& src) {
    const auto xc = x.contiguous(torch::MemoryFormat::ChannelsLast);
    save_input(ctx, xc, src, wr, w);
    ctx->saved_data["sizes"] = x.sizes().vec();
    ctx->saved_data["pass_input"] = pass_input;
    // Forward is cuDNN's convolution, as before (its 1x1 kernels are tuned); backward the products.
    auto y = at::convolution(xc, wr, std::nullopt, {1, 1}, {0, 0}, {1, 1}, false, {0, 0}, 1);
    if (!pass_input) return {y};
    return {y, x};  // x as an output: autograd makes it a view with this function as its grad_fn
  }
  // `grads` by reference: the node's own list (custom_function.h passes it as an lvalue), so a
  // gradient no one else holds has a use count of 1.
  static variable_list backward(AutogradContext* ctx, variable_list& grads) {
    const auto s = ctx->get_saved_variables();
    const auto &wr = s[2], &w = s[3];
    const auto sizes = ctx->saved_data["sizes"].toIntVector();
    const int64_t k = wr.size(0);
    const bool pass_input = ctx->saved_data["pass_input"].toBool();
    torch::Tensor gx, gw;
    if (!grads[0].defined()) {
      if (pass_input) gx = grads[1];
      return {gx, torch::Tensor(), gw, torch::Tensor(), torch::Tensor()};
    }
    const int64_t c = sizes[1];
    // The shortcut's gradient, where no one else holds it or its storage (the test autograd's
    // InputBuffer makes before accumulating in place; not where one tensor came for both outputs,
    // as an add's backward hands out): the product adds into it.
    const bool own = pass_input && grads[1].defined() && grads[1].use_count() == 1 && grads[1].has_storage() &&
                     grads[1].storage().use_count() == 1;
    auto g2 = pixels(grads[0].to(wr.scalar_type()));
    if (ctx->needs_input_grad(0)) {
      const auto w2 = wr.view({k, c});
      const torch::Tensor other = pass_input ? grads[1] : torch::Tensor();
      if (own && other.scalar_type() == g2.scalar_type() && other.is_contiguous(torch::MemoryFormat::ChannelsLast)) {
        auto o2 = pixels(other);
        at::addmm_out(o2, o2, g2, w2);
        gx = other;
      } else {
        gx = image(g2.mm(w2), sizes, c);
        if (other.defined()) gx = gx + other;
      }
    }
    if (ctx->needs_input_grad(2)) gw = weight_grad(w, g2, pixels(saved_input(s)));  // the input remade only now
    return {gx, torch::Tensor(), gw, torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

bool routes_weight(const torch::Tensor& x, const torch::Tensor& w) {
  const auto dt = run_dtype(x);
  return x.is_cuda() && torch::GradMode::is_enabled() && w.requires_grad() && w.is_leaf() &&
         w.scalar_type() == torch::kFloat && (dt == torch::kHalf || dt == torch::kBFloat16);
}

bool keeps_source(const torch::Tensor& x, const torch::Tensor& w, const BnReluSource& src) {
  // The source of this very tensor, already in the run dtype (no autocast cast in between) and
  // channels_last, as the functions save their input.
  const auto dt = run_dtype(x);
  return src && routes_weight(x, w) && x.scalar_type() == dt && src.x.scalar_type() == dt &&
         src.x.sizes() == x.sizes() && x.is_contiguous(torch::MemoryFormat::ChannelsLast);
}

namespace {
BnReluSource usable(const BnReluSource& src, const torch::Tensor& x, const torch::Tensor& w) {
  return keeps_source(x, w, src) ? src : BnReluSource{};
}
}  // namespace

std::vector<torch::Tensor> conv1x1(const torch::Tensor& x, const torch::Tensor& w, bool pass_input,
                                   const BnReluSource& src) {
  TORCH_CHECK(x.dim() == 4 && w.dim() == 4 && w.size(2) == 1 && w.size(3) == 1 && w.size(1) == x.size(1),
              "conv1x1: x [N, C, H, W] and w [K, C, 1, 1] expected");
  const auto dt = run_dtype(x);
  return Conv1x1::apply(autocast_cast(dt, x), param_cast(dt, w), w, pass_input, usable(src, x, w));
}

torch::Tensor conv2d(const torch::Tensor& x, const torch::Tensor& w, int64_t stride, int64_t padding,
                     const BnReluSource& src) {
  if (routes_weight(x, w)) {
    const auto dt = run_dtype(x);
    return OwnWeightConv::apply(autocast_cast(dt, x), param_cast(dt, w), w, stride, padding, usable(src, x, w));
  }
  return at::conv2d(x, w, {}, {stride, stride}, {padding, padding});
}

}  // namespace efftrain::kernels

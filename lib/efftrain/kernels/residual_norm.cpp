#include "efftrain/kernels/residual_norm.h"

#ifdef EFFTRAIN_WITH_KERNELS
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>

#include <mutex>

#include "efftrain/kernels/glue.h"
#endif

namespace efftrain::kernels {

namespace {
bool fused(const torch::Tensor& s_in, const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& bias) {
#ifdef EFFTRAIN_WITH_KERNELS
  const auto f32 = [](const torch::Tensor& t) { return t.defined() && t.scalar_type() == torch::kFloat; };
  return s_in.is_cuda() && f32(s_in) && s_in.dim() >= 1 && h.sizes() == s_in.sizes() && h.device() == s_in.device() &&
         kernel_dtype(h) && residual_norm_width_supported(s_in.size(-1)) && f32(weight) && f32(bias) &&
         weight.numel() == s_in.size(-1) && bias.numel() == s_in.size(-1) && weight.device() == s_in.device();
#else
  (void)s_in, (void)h, (void)weight, (void)bias;
  return false;
#endif
}

#ifdef EFFTRAIN_WITH_KERNELS
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The generator's position for one fused forward; backward reuses it to draw the same mask.
Philox draw_position(const torch::Device& d) {
  auto gen = at::cuda::detail::getDefaultCUDAGenerator(d.index());
  std::lock_guard<std::mutex> lock(gen.mutex());
  const at::PhiloxCudaState st = at::check_generator<at::CUDAGeneratorImpl>(gen)->philox_cuda_state(
      kResidualNormPhiloxIncrement);
  Philox r;
  r.captured = st.captured_;
  if (st.captured_) {
    r.seed_ptr = st.seed_.ptr;
    r.offset_ptr = st.offset_.ptr;
    r.intragraph = st.offset_intragraph_;
  } else {
    r.seed = st.seed_.val;
    r.offset = st.offset_.val;
  }
  return r;
}

void save(AutogradContext* ctx, const Philox& r) {
  ctx->saved_data["seed"] = static_cast<int64_t>(r.seed);
  ctx->saved_data["offset"] = static_cast<int64_t>(r.offset);
  ctx->saved_data["seed_ptr"] = reinterpret_cast<int64_t>(r.seed_ptr);
  ctx->saved_data["offset_ptr"] = reinterpret_cast<int64_t>(r.offset_ptr);
  ctx->saved_data["intragraph"] = static_cast<int64_t>(r.intragraph);
  ctx->saved_data["captured"] = r.captured;
}
Philox load(AutogradContext* ctx) {
  Philox r;
  r.seed = static_cast<uint64_t>(ctx->saved_data["seed"].toInt());
  r.offset = static_cast<uint64_t>(ctx->saved_data["offset"].toInt());
  r.seed_ptr = reinterpret_cast<const int64_t*>(ctx->saved_data["seed_ptr"].toInt());
  r.offset_ptr = reinterpret_cast<const int64_t*>(ctx->saved_data["offset_ptr"].toInt());
  r.intragraph = static_cast<uint64_t>(ctx->saved_data["intragraph"].toInt());
  r.captured = ctx->saved_data["captured"].toBool();
  return r;
}

struct ResidualNorm : torch::autograd::Function<ResidualNorm> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& s_in, const torch::Tensor& h,
                               const torch::Tensor& weight, const torch::Tensor& bias, double keep, double eps) {
    const c10::cuda::CUDAGuard guard(s_in.device());
    auto s = s_in.contiguous(), x = h.contiguous();
    const int64_t width = s.size(-1), rows = s.numel() / width;
    auto s_out = torch::empty_like(s), y = torch::empty_like(x);
    auto stats = s.options().dtype(torch::kFloat);
    auto mean = torch::empty({rows}, stats), rstd = torch::empty({rows}, stats);
    const Philox r = keep < 1.0 ? draw_position(s.device()) : Philox{};
    check_launch(residual_norm_forward(dtype_of(x), s.data_ptr<float>(), x.data_ptr(), weight.data_ptr<float>(),
                                       bias.data_ptr<float>(), rows, width, static_cast<float>(keep), r,
                                       static_cast<float>(eps), s_out.data_ptr<float>(), y.data_ptr(),
                                       mean.data_ptr<float>(), rstd.data_ptr<float>(), stream()),
                 "fused residual LayerNorm forward");
    ctx->save_for_backward({s_out, mean, rstd, weight, bias});
    ctx->saved_data["keep"] = keep;
    ctx->saved_data["h_dtype"] = static_cast<int64_t>(x.scalar_type());
    save(ctx, r);
    return {s_out, y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &s_out = saved[0], &mean = saved[1], &rstd = saved[2], &weight = saved[3], &bias = saved[4];
    const c10::cuda::CUDAGuard guard(s_out.device());
    const auto h_dtype = static_cast<at::ScalarType>(ctx->saved_data["h_dtype"].toInt());
    const int64_t width = s_out.size(-1), rows = s_out.numel() / width;
    auto dy = grads[1].defined() ? grads[1].to(h_dtype).contiguous() : torch::zeros_like(s_out, h_dtype);
    auto ds_out = grads[0].defined() ? grads[0].to(torch::kFloat).contiguous() : torch::Tensor();
    auto ds = torch::empty_like(s_out);
    auto dh = torch::empty_like(s_out, h_dtype);
    auto partials = torch::empty({residual_norm_partials(dtype_of(dh), rows, width)}, s_out.options());
    // LayerNorm's parameter gradients added into their .grad where both may be (as kernels::weight_grad)
    const bool add = grad_in_place(weight, s_out.device()) && grad_in_place(bias, s_out.device());
    auto dgamma = add ? weight.grad() : torch::empty_like(weight), dbeta = add ? bias.grad() : torch::empty_like(bias);
    check_launch(residual_norm_backward(dtype_of(dh), dy.data_ptr(), ds_out.defined() ? ds_out.data_ptr<float>() : nullptr,
                                        s_out.data_ptr<float>(), mean.data_ptr<float>(), rstd.data_ptr<float>(),
                                        weight.data_ptr<float>(), rows, width,
                                        static_cast<float>(ctx->saved_data["keep"].toDouble()), load(ctx),
                                        ds.data_ptr<float>(), dh.data_ptr(), partials.data_ptr<float>(),
                                        dgamma.data_ptr<float>(), dbeta.data_ptr<float>(), add, stream()),
                 "fused residual LayerNorm backward");
    if (add) dgamma = dbeta = torch::Tensor();
    return {ds, dh, dgamma, dbeta, torch::Tensor(), torch::Tensor()};
  }
};
#endif
}  // namespace

const char* residual_norm_path(const torch::Tensor& s_in, const torch::Tensor& h, const torch::Tensor& weight,
                               const torch::Tensor& bias) {
  return fused(s_in, h, weight, bias) ? "fused_kernel" : "aten";
}

std::pair<torch::Tensor, torch::Tensor> residual_layer_norm(const torch::Tensor& s_in, const torch::Tensor& h,
                                                            const torch::Tensor& weight, const torch::Tensor& bias,
                                                            double p, bool training, double eps, bool use_kernel) {
  const double drop = training ? p : 0.0;
#ifdef EFFTRAIN_WITH_KERNELS
  if (use_kernel && fused(s_in, h, weight, bias)) {
    auto out = ResidualNorm::apply(s_in, h, weight, bias, 1.0 - drop, eps);
    return {out[0], out[1]};
  }
#endif
  auto s = s_in + torch::dropout(h, drop, training);
  return {s, torch::layer_norm(s, {s.size(-1)}, weight, bias, eps)};
}

}  // namespace efftrain::kernels

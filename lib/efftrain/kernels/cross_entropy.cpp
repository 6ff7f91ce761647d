#include "efftrain/kernels/cross_entropy.h"

#include "efftrain/kernels/launch.h"

#ifdef EFFTRAIN_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "efftrain/kernels/glue.h"
#endif

namespace efftrain::kernels {

bool built() {
#ifdef EFFTRAIN_WITH_KERNELS
  return true;
#else
  return false;
#endif
}

namespace {
// Whether the kernels take these logits: a build with them, CUDA, [rows, vocab], fp32/fp16/bf16.
bool fused(const torch::Tensor& logits) {
#ifdef EFFTRAIN_WITH_KERNELS
  return logits.is_cuda() && logits.dim() == 2 && kernel_dtype(logits);
#else
  return false;
#endif
}

}  // namespace

const char* cross_entropy_path(const torch::Tensor& logits) { return fused(logits) ? "fused_kernel" : "aten"; }

std::pair<torch::Tensor, torch::Tensor> cross_entropy_rows(const torch::Tensor& logits, const torch::Tensor& targets) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0),
              "cross-entropy: expected logits [rows, vocab] and targets [rows]");
  torch::NoGradGuard ng;
  auto t = targets.to(torch::kLong);
#ifdef EFFTRAIN_WITH_KERNELS
  if (fused(logits)) {
    const c10::cuda::CUDAGuard guard(logits.device());
    auto x = logits.contiguous();
    t = t.contiguous();
    auto f32 = x.options().dtype(torch::kFloat);
    auto lse = torch::empty({x.size(0)}, f32), losses = torch::empty({x.size(0)}, f32);
    check_launch(cross_entropy_forward(dtype_of(x), x.data_ptr(), t.data_ptr<int64_t>(), x.size(0), x.size(1),
                                       lse.data_ptr<float>(), losses.data_ptr<float>(), stream()),
                 "fused cross-entropy forward");
    return {lse, losses};
  }
#endif
  auto x = logits.to(torch::kFloat);
  auto lse = torch::logsumexp(x, 1);
  return {lse, lse - x.gather(1, t.view({-1, 1})).view({-1})};
}

void cross_entropy_rows_backward(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& lse,
                                 const torch::Tensor& grad, double scale, torch::Tensor& dlogits) {
  torch::NoGradGuard ng;
  auto t = targets.to(torch::kLong);
  auto g = grad.to(torch::kFloat).reshape({1});
#ifdef EFFTRAIN_WITH_KERNELS
  if (fused(logits)) {
    const c10::cuda::CUDAGuard guard(logits.device());
    TORCH_CHECK(logits.is_contiguous() && dlogits.is_contiguous() && dlogits.scalar_type() == logits.scalar_type(),
                "fused cross-entropy backward: contiguous logits and gradient of one dtype expected");
    t = t.contiguous();
    g = g.contiguous();
    check_launch(cross_entropy_backward(dtype_of(logits), logits.data_ptr(), t.data_ptr<int64_t>(),
                                        lse.data_ptr<float>(), g.data_ptr<float>(), static_cast<float>(scale),
                                        logits.size(0), logits.size(1), dlogits.data_ptr(), stream()),
                 "fused cross-entropy backward");
    return;
  }
#endif
  auto p = (logits.to(torch::kFloat) - lse.view({-1, 1})).exp();
  p.scatter_add_(1, t.view({-1, 1}), -torch::ones({p.size(0), 1}, p.options()));
  dlogits.copy_(p * (g * scale));
}

torch::Tensor cross_entropy_rows_to_grad(torch::Tensor& logits, const torch::Tensor& targets, double scale) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0) && logits.is_contiguous(),
              "cross-entropy: expected contiguous logits [rows, vocab] and targets [rows]");
  torch::NoGradGuard ng;
  const auto one = torch::ones({1}, logits.options().dtype(torch::kFloat));
#ifdef EFFTRAIN_WITH_KERNELS
  if (fused(logits)) {
    const c10::cuda::CUDAGuard guard(logits.device());
    auto t = targets.to(torch::kLong).contiguous();
    auto f32 = logits.options().dtype(torch::kFloat);
    auto lse = torch::empty({logits.size(0)}, f32), losses = torch::empty({logits.size(0)}, f32);
    check_launch(cross_entropy_forward_grad(dtype_of(logits), logits.data_ptr(), t.data_ptr<int64_t>(),
                                            one.data_ptr<float>(), static_cast<float>(scale), logits.size(0),
                                            logits.size(1),
                                            lse.data_ptr<float>(), losses.data_ptr<float>(), stream()),
                 "fused cross-entropy forward and gradient");
    return losses;
  }
#endif
  auto [lse, losses] = cross_entropy_rows(logits, targets);
  cross_entropy_rows_backward(logits, targets, lse, one, scale, logits);
  return losses;
}

namespace {
struct FusedCrossEntropy : torch::autograd::Function<FusedCrossEntropy> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, bool logits_dead) {
    auto x = logits.contiguous();
    auto t = targets.to(torch::kLong).contiguous();
    auto [lse, losses] = cross_entropy_rows(x, t);
    ctx->save_for_backward({x, t, lse});
    ctx->saved_data["in_place"] = logits_dead;
    ctx->saved_data["done"] = false;
    return losses.mean();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const bool in_place = ctx->saved_data["in_place"].toBool();
    TORCH_CHECK(!(in_place && ctx->saved_data["done"].toBool()),
                "fused cross-entropy: backward ran twice over logits it already overwrote (retain_graph)");
    ctx->saved_data["done"] = true;
    auto dx = in_place ? saved[0] : torch::empty_like(saved[0]);
    cross_entropy_rows_backward(saved[0], saved[1], saved[2], grads[0], 1.0 / static_cast<double>(saved[0].size(0)), dx);
    return {dx, torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

torch::Tensor cross_entropy_mean(const torch::Tensor& logits, const torch::Tensor& targets, bool logits_dead) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0),
              "cross_entropy_mean: expected logits [rows, vocab] and targets [rows]");
  if (fused(logits)) return FusedCrossEntropy::apply(logits, targets, logits_dead);
  return torch::nn::functional::cross_entropy(logits.to(torch::kFloat), targets);
}

}  // namespace efftrain::kernels

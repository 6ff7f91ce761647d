// kernels::linear and kernels::column_sums: at::linear and sum(0) off CUDA; on the GPU the
// column-sum kernel against fp32 sums, and the linear's own backward against ATen's.
// kernels::weight_grad: where it returns the gradient and where it adds it into .grad.
#include <catch2/catch_test_macros.hpp>

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/torch.h>

#include <functional>

#include "efftrain/kernels/linear.h"
#include "model_files.h"

using namespace efftrain;
using efftrain::test::relative_error;

namespace {
// y and the gradients of sum(y * r) for x, w, b through f, each leaf a fresh copy.
std::vector<torch::Tensor> linear_grads(const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                                                          const torch::Tensor&)>& f,
                                        const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                        const torch::Tensor& r) {
  auto xl = x.clone().requires_grad_(true), wl = w.clone().requires_grad_(true), bl = b.clone().requires_grad_(true);
  auto y = f(xl, wl, bl);
  (y.to(torch::kFloat) * r).sum().backward();
  return {y.detach(), xl.grad(), wl.grad(), bl.grad()};
}
}  // namespace

TEST_CASE("kernels::linear and column_sums off CUDA are at::linear and sum(0)") {
  torch::manual_seed(0);
  auto x = torch::randn({3, 5, 8}), w = torch::randn({16, 8}), b = torch::randn({16}), r = torch::randn({3, 5, 16});
  auto ours = linear_grads([](auto& x, auto& w, auto& b) { return kernels::linear(x, w, b); }, x, w, b, r);
  auto ref = linear_grads([](auto& x, auto& w, auto& b) { return at::linear(x, w, b); }, x, w, b, r);
  for (size_t i = 0; i < ref.size(); ++i) CHECK(torch::equal(ours[i], ref[i]));
  auto g = torch::randn({37, 24});
  CHECK(torch::equal(kernels::column_sums(g), g.sum(0)));
}

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
// y = x w^T with w's gradient from weight_grad.
struct WeightGradLinear : torch::autograd::Function<WeightGradLinear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w) {
    ctx->save_for_backward({x, w});
    return x.mm(w.t());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    return {grads[0].mm(s[1]), kernels::weight_grad(s[1], grads[0], s[0])};
  }
};
}  // namespace

TEST_CASE("kernels::weight_grad: returned where .grad is missing, added into .grad in place where it is, returned "
          "to autograd::grad") {
  torch::manual_seed(2);
  auto x = torch::randn({5, 3}, torch::kDouble), w = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);
  auto r = torch::randn({5, 4}, torch::kDouble);
  const auto expected = r.t().mm(x);  // d sum(y * r) / dw
  // AccumulateGrad's hooks (the gradient buckets') run whether or not it got a gradient to add
  std::vector<bool> received;  // per backward: whether AccumulateGrad got one
  const auto accumulator = torch::autograd::impl::grad_accumulator(w);  // w holds it weakly
  accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
      [&](const variable_list& out, const variable_list& in) {
        received.push_back(in.at(0).defined());
        return out;
      }));
  auto loss = [&] { return (WeightGradLinear::apply(x, w) * r).sum(); };
  loss().backward();  // no .grad yet: autograd stores the returned gradient
  REQUIRE(w.grad().defined());
  CHECK(torch::allclose(w.grad(), expected, 1e-12, 1e-12));
  CHECK(received == std::vector<bool>{true});
  const auto* at = w.grad().data_ptr();
  loss().backward();  // added into the same tensor
  CHECK(w.grad().data_ptr() == at);
  CHECK(torch::allclose(w.grad(), 2 * expected, 1e-12, 1e-12));
  CHECK(received == std::vector<bool>{true, false});  // added by weight_grad, nothing left for autograd
  // a gradient taken for named inputs is returned, .grad left alone
  auto g = torch::autograd::grad({loss()}, {w});
  CHECK(torch::allclose(g[0], expected, 1e-12, 1e-12));
  CHECK(torch::allclose(w.grad(), 2 * expected, 1e-12, 1e-12));
  // a .grad of another dtype is not written: the gradient goes back to autograd
  auto v = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);
  v.mutable_grad() = torch::zeros({4, 3}, torch::kFloat);
  torch::NoGradGuard ng;  // as in backward
  CHECK_FALSE(kernels::grad_in_place(v, v.device()));
  CHECK(kernels::grad_in_place(w, w.device()));
}

TEST_CASE("gpu: column_sums of fp16/bf16 matrices: fp32 sums rounded once", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  for (auto dtype : {torch::kHalf, torch::kBFloat16}) {
    // widths of the kernel (multiples of 8, up to GPT-2's 2304 and beyond 1024 vectors) and one
    // of ATen's (12); rows not a multiple of the kernel's 32; more chunks of 32 rows than one
    // wave of blocks holds (each block then sums several)
    for (auto [rows, width] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 8}, {1000, 768}, {4099, 2304}, {70, 9000}, {65, 12}, {40001, 768}, {20000, 3072}}) {
      INFO("dtype " << dtype << " rows " << rows << " width " << width);
      torch::manual_seed(rows + width);
      auto g = torch::randn({rows, width}, torch::kCUDA).to(dtype);
      auto s = kernels::column_sums(g);
      CHECK(s.dtype() == dtype);
      CHECK(s.sizes() == torch::IntArrayRef{width});
      auto ref = g.to(torch::kFloat).sum(0);
      // one rounding of an fp32 sum: within half an ulp of the dtype plus fp32's ordering error
      const double tol = dtype == torch::kHalf ? 1e-3 : 4e-3;
      CHECK(relative_error(s, ref) < tol);
      CHECK(torch::equal(s, kernels::column_sums(g)));  // a fixed order: the same bits every run
    }
  }
}

TEST_CASE("gpu: kernels::linear under bf16 autocast: ATen's output and matmul gradients, the bias gradient summed",
          "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  torch::manual_seed(5);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  auto x = torch::randn({4, 300, 64}, f32).to(torch::kBFloat16), w = torch::randn({2304, 64}, f32) * 0.1,
       b = torch::randn({2304}, f32), r = torch::randn({4, 300, 2304}, f32);
  auto run = [&](bool ours) {
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    auto out = linear_grads(
        [&](auto& x, auto& w, auto& b) { return ours ? kernels::linear(x, w, b) : at::linear(x, w, b); }, x, w, b, r);
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::clear_cache();
    return out;
  };
  const auto ours = run(true), ref = run(false);
  CHECK(ours[0].dtype() == torch::kBFloat16);
  CHECK(torch::equal(ours[0], ref[0]));  // the same at::linear
  CHECK(relative_error(ours[1], ref[1]) < 1e-6);  // x: the same matmul
  // w: g^T x of the bf16 gradient (r rounded) and x, exact in fp64; ours is cuBLAS's fp32
  // output, ATen's that rounded to bf16 and cast back
  const auto exact = r.to(torch::kBFloat16).to(torch::kDouble).reshape({-1, 2304}).t().mm(
      x.to(torch::kDouble).reshape({-1, 64}));
  CHECK(ours[2].dtype() == torch::kFloat);
  CHECK(relative_error(ours[2], exact) < 1e-5);
  CHECK(relative_error(ref[2], exact) < 4e-3);
  CHECK(ours[3].dtype() == torch::kFloat);  // the fp32 bias's gradient: fp32 sums of the bf16 gradient
  const auto exact_b = r.to(torch::kBFloat16).to(torch::kDouble).reshape({-1, 2304}).sum(0);
  CHECK(relative_error(ours[3], exact_b) < 1e-5);
  CHECK(relative_error(ref[3], exact_b) < 4e-3);  // ATen's: rounded to bf16
  // parameters with a .grad already (static gradients, a later micro-batch): the weight's added
  // in the matmul, the bias's by the column-sum kernel
  auto wl = w.clone().requires_grad_(true), bl = b.clone().requires_grad_(true);
  const auto before_w = torch::randn({2304, 64}, f32), before_b = torch::randn({2304}, f32);
  wl.mutable_grad() = before_w.clone();
  bl.mutable_grad() = before_b.clone();
  const auto* slot = wl.grad().data_ptr();
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  auto y = kernels::linear(x, wl, bl);
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  at::autocast::clear_cache();
  (y.to(torch::kFloat) * r).sum().backward();
  CHECK(wl.grad().data_ptr() == slot);
  CHECK(relative_error(wl.grad(), before_w.to(torch::kDouble) + exact) < 1e-5);
  CHECK(relative_error(bl.grad(), before_b + ours[3]) < 1e-6);  // the same fp32 sums, added
}

namespace {
// q, k, v of qkv_linear or of the ops written out, and the gradients of `loss(q, k, v)` for x, w, b.
std::vector<torch::Tensor> qkv_grads(bool ours, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                     int64_t heads,
                                     const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                                                       const torch::Tensor&)>& loss) {
  auto xl = x.clone().requires_grad_(true), wl = w.clone().requires_grad_(true), bl = b.clone().requires_grad_(true);
  torch::Tensor q, k, v;
  if (ours) {
    auto out = kernels::qkv_linear(xl, wl, bl, heads);
    q = out[0], k = out[1], v = out[2];
  } else {
    const int64_t B = x.size(0), T = x.size(1), C = w.size(0) / 3;
    auto parts = at::linear(xl, wl, bl).split(C, 2);
    q = parts[0].view({B, T, heads, C / heads}).transpose(1, 2);
    k = parts[1].view({B, T, heads, C / heads}).transpose(1, 2);
    v = parts[2].view({B, T, heads, C / heads}).transpose(1, 2);
  }
  loss(q, k, v).backward();
  return {q.detach(), k.detach(), v.detach(), xl.grad(), wl.grad(), bl.grad()};
}
}  // namespace

TEST_CASE("kernels::qkv_linear off CUDA: linear split into heads, [B, heads, T, D] views") {
  torch::manual_seed(1);
  auto x = torch::randn({2, 5, 8}), w = torch::randn({24, 8}), b = torch::randn({24});
  auto r = torch::randn({3, 2, 2, 5, 4});
  auto loss = [&](auto& q, auto& k, auto& v) { return (q * r[0]).sum() + (k * r[1]).sum() + (v * r[2]).sum(); };
  auto ours = qkv_grads(true, x, w, b, 2, loss), ref = qkv_grads(false, x, w, b, 2, loss);
  CHECK(ours[0].sizes() == torch::IntArrayRef{2, 2, 5, 4});
  for (size_t i = 0; i < ref.size(); ++i) CHECK(torch::equal(ours[i], ref[i]));
}

TEST_CASE("gpu: kernels::qkv_linear under bf16 autocast: the gradients of q, k, v in any layout gathered, the bias "
          "gradient summed on the way",
          "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  torch::manual_seed(7);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const int64_t B = 3, T = 100, heads = 4, D = 32, C = heads * D;
  auto x = torch::randn({B, T, C}, f32).to(torch::kBFloat16), w = torch::randn({3 * C, C}, f32) * 0.1,
       b = torch::randn({3 * C}, f32);
  // the gradients arrive as [B, heads, T, D] contiguous, as [B, T, heads, D] memory (transposed
  // views), and from SDPA's backward (whatever layout its kernel writes); one of them missing
  auto r = torch::randn({3, B, heads, T, D}, f32), rt = torch::randn({3, B, T, heads, D}, f32);
  const std::vector<std::pair<std::string, std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                                                        const torch::Tensor&)>>>
      losses = {
          {"contiguous", [&](auto& q, auto& k, auto& v) { return (q * r[0]).sum() + (k * r[1]).sum() + (v * r[2]).sum(); }},
          {"transposed", [&](auto& q, auto& k, auto& v) {
             return (q * rt[0].transpose(1, 2)).sum() + (k * rt[1].transpose(1, 2)).sum() + (v * rt[2].transpose(1, 2)).sum();
           }},
          {"sdpa", [&](auto& q, auto& k, auto& v) {
             return (at::scaled_dot_product_attention(q, k, v, {}, 0.0, true).to(torch::kFloat) * r[0]).sum();
           }},
          {"v unused", [&](auto& q, auto& k, auto&) { return (q * r[0]).sum() + (k * r[1]).sum(); }}};
  for (const auto& [name, loss] : losses) {
    INFO(name);
    auto run = [&](bool ours) {
      at::autocast::set_autocast_enabled(at::kCUDA, true);
      at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
      auto out = qkv_grads(ours, x, w, b, heads, loss);
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();
      return out;
    };
    const auto ours = run(true), ref = run(false);
    for (int i = 0; i < 3; ++i) CHECK(torch::equal(ours[i], ref[i]));  // q, k, v: the same at::linear
    CHECK(relative_error(ours[3], ref[3]) < 1e-6);                      // x: the same matmul of the same gradient
    CHECK(ours[4].dtype() == torch::kFloat);
    CHECK(relative_error(ours[4], ref[4]) < 4e-3);  // w: fp32 out of the matmul, ATen's rounded to bf16
    CHECK(relative_error(ours[5], ref[5]) < 4e-3);                      // b: fp32 sums rounded to bf16
  }
}

// kernels::linear and kernels::column_sums: at::linear and sum(0) off CUDA; on the GPU the
// column-sum kernel against fp32 sums, and the linear's own backward against ATen's.
#include <catch2/catch_test_macros.hpp>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

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

TEST_CASE("gpu: column_sums of fp16/bf16 matrices: fp32 sums rounded once", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  for (auto dtype : {torch::kHalf, torch::kBFloat16}) {
    // widths of the kernel (multiples of 8, up to GPT-2's 2304 and beyond 1024 vectors) and one
    // of ATen's (12); rows not a multiple of the kernel's 32
    for (auto [rows, width] : std::vector<std::pair<int64_t, int64_t>>{{1, 8}, {1000, 768}, {4099, 2304}, {70, 9000},
                                                                        {65, 12}}) {
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
  CHECK(relative_error(ours[2], ref[2]) < 1e-6);  // w
  CHECK(ours[3].dtype() == torch::kFloat);         // the fp32 bias's gradient, through autocast's cast
  CHECK(relative_error(ours[3], ref[3]) < 4e-3);  // b: both fp32 sums rounded to bf16, other orders
}

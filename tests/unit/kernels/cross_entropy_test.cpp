#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <limits>

#include "efftrain/kernels/cross_entropy.h"
#include "model_files.h"

using namespace efftrain;
using efftrain::test::relative_error;

namespace {
// ATen's cross-entropy on fp32 copies of the logits: loss and d loss / d logits (fp32).
std::pair<torch::Tensor, torch::Tensor> reference(const torch::Tensor& logits, const torch::Tensor& targets, double g) {
  auto x = logits.detach().to(torch::kFloat).clone().requires_grad_(true);
  auto loss = torch::nn::functional::cross_entropy(x, targets);
  (loss * g).backward();
  return {loss.detach(), x.grad()};
}

struct Fused {
  torch::Tensor loss, grad;
};
Fused fused(const torch::Tensor& logits, const torch::Tensor& targets, double g, bool dead) {
  auto x = logits.detach().clone().requires_grad_(true);
  auto h = x * 1.0;  // a non-leaf, as the classifier's output is
  auto loss = kernels::cross_entropy_mean(h, targets, dead);
  (loss * g).backward();
  return {loss.detach(), x.grad()};
}

}  // namespace

TEST_CASE("cross_entropy_mean off CUDA is ATen's cross-entropy") {
  torch::manual_seed(0);
  auto logits = torch::randn({37, 101});
  auto targets = torch::randint(0, 101, {37}, torch::kLong);
  CHECK(std::string(kernels::cross_entropy_path(logits)) == "aten");
  auto [l_ref, g_ref] = reference(logits, targets, 2.0);
  auto f = fused(logits, targets, 2.0, true);
  CHECK(f.loss.item<double>() == l_ref.item<double>());
  CHECK(torch::equal(f.grad, g_ref));
}

TEST_CASE("gpu: the fused cross-entropy kernel gives ATen's loss and gradient", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  REQUIRE(kernels::built());
  const auto inf = std::numeric_limits<float>::infinity();
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    // vocab 1000 (16-byte rows: vector loads), 1001 (scalar path), 50304 with -inf padding
    for (int64_t vocab : {1000, 1001, 50304}) {
      for (bool dead : {true, false}) {
        torch::manual_seed(vocab + static_cast<int>(dtype));
        const int64_t rows = vocab > 10000 ? 64 : 257, live = vocab > 10000 ? 50257 : vocab;
        auto logits = (torch::randn({rows, vocab}, torch::kCUDA) * 4).to(dtype);
        if (live < vocab) logits.narrow(1, live, vocab - live).fill_(-inf);
        auto targets = torch::randint(0, live, {rows}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong));
        REQUIRE(std::string(kernels::cross_entropy_path(logits)) == "fused_kernel");
        auto [l_ref, g_ref] = reference(logits, targets, 3.0);
        auto f = fused(logits, targets, 3.0, dead);
        INFO("dtype " << dtype << " vocab " << vocab << " in place " << dead);
        // fp32: both sum in fp32 in different orders; half types: the same fp32 math on the
        // same inputs, the gradient rounded once to the logits' dtype (2^-8 bf16, 2^-11 fp16).
        CHECK(relative_error(f.loss, l_ref) < 2e-6);
        const double tol = dtype == torch::kFloat ? 1e-5 : dtype == torch::kHalf ? 1e-3 : 8e-3;
        CHECK(relative_error(f.grad, g_ref) < tol);
        CHECK(f.grad.dtype() == dtype);
        CHECK(f.grad.isfinite().all().item<bool>());
        if (live < vocab) CHECK(f.grad.narrow(1, live, vocab - live).abs().max().item<float>() == 0.f);
      }
    }
  }
}

TEST_CASE("gpu: an in-place fused cross-entropy refuses a second backward", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  auto x = torch::randn({8, 64}, torch::kCUDA).requires_grad_(true);
  auto h = x * 1.0;
  auto loss = kernels::cross_entropy_mean(h, torch::zeros({8}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong)), true);
  loss.backward({}, /*retain_graph=*/true);
  CHECK_THROWS(loss.backward());
}

TEST_CASE("cross_entropy_rows_to_grad off CUDA: the rows' losses, the logits replaced by softmax - onehot") {
  torch::manual_seed(1);
  auto logits = torch::randn({37, 101});
  auto targets = torch::randint(0, 101, {37}, torch::kLong);
  auto [l_ref, g_ref] = reference(logits, targets, 37.0);  // the mean's gradient times rows: per-row
  auto x = logits.clone();
  auto losses = kernels::cross_entropy_rows_to_grad(x, targets);
  CHECK(relative_error(losses.mean(), l_ref) < 1e-6);
  CHECK(relative_error(x, g_ref) < 1e-6);
  auto y = logits.clone();
  kernels::cross_entropy_rows_to_grad(y, targets, -2.5);
  CHECK(relative_error(y, g_ref * -2.5) < 1e-6);
}

TEST_CASE("gpu: cross_entropy_rows_to_grad (one pass through shared memory) gives ATen's losses and gradient", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  REQUIRE(kernels::built());
  const auto inf = std::numeric_limits<float>::infinity();
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    // 1000: one pass; 1001: not a multiple of 16 bytes, the two kernels; 50304 with -inf padding:
    // one pass (fp32 too on a Hopper card: 201 KB of shared memory); 131072 (256 KB in fp16/bf16)
    // fits no block: the two kernels
    for (int64_t vocab : {1000, 1001, 50304, 131072}) {
      torch::manual_seed(vocab + static_cast<int>(dtype));
      const int64_t rows = vocab > 10000 ? 48 : 257, live = vocab == 50304 ? 50257 : vocab;
      auto logits = (torch::randn({rows, vocab}, torch::kCUDA) * 4).to(dtype);
      if (live < vocab) logits.narrow(1, live, vocab - live).fill_(-inf);
      auto targets = torch::randint(0, live, {rows}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong));
      auto [l_ref, g_ref] = reference(logits, targets, static_cast<double>(rows));
      auto x = logits.clone();
      auto losses = kernels::cross_entropy_rows_to_grad(x, targets);
      INFO("dtype " << dtype << " vocab " << vocab);
      CHECK(losses.sizes() == torch::IntArrayRef{rows});
      CHECK(relative_error(losses.mean(), l_ref) < 2e-6);
      const double tol = dtype == torch::kFloat ? 1e-5 : dtype == torch::kHalf ? 1e-3 : 8e-3;
      CHECK(relative_error(x.to(torch::kFloat), g_ref) < tol);
      CHECK(x.isfinite().all().item<bool>());
      if (live < vocab) CHECK(x.narrow(1, live, vocab - live).abs().max().item<float>() == 0.f);
      // the same numbers as the two kernels of cross_entropy_rows + cross_entropy_rows_backward
      auto [lse, l2] = kernels::cross_entropy_rows(logits, targets);
      auto y = logits.clone();
      kernels::cross_entropy_rows_backward(logits, targets, lse, torch::ones({1}, lse.options()), 1.0, y);
      CHECK(relative_error(losses, l2) < 1e-6);
      CHECK(relative_error(x.to(torch::kFloat), y.to(torch::kFloat)) < (dtype == torch::kFloat ? 1e-6 : 1e-2));
    }
  }
}

TEST_CASE("gpu: cross_entropy_rows_to_grad scales the gradient; blocks walking many rows", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  REQUIRE(kernels::built());
  const auto inf = std::numeric_limits<float>::infinity();
  // 50304 with -inf padding: two rows per block in shared memory in fp16/bf16, one in fp32; 1000
  // rows (more than any card's SMs: each block walks several, its next row loading meanwhile).
  // scale 3 takes the fp16/bf16 kernel's folded path (exp(x - lse + log 3)), -2 the multiplied one.
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    for (double scale : {3.0, -2.0}) {
      torch::manual_seed(7 + static_cast<int>(dtype));
      const int64_t rows = 1000, vocab = 50304, live = 50257;
      auto logits = (torch::randn({rows, vocab}, torch::kCUDA) * 4).to(dtype);
      logits.narrow(1, live, vocab - live).fill_(-inf);
      auto targets = torch::randint(0, live, {rows}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong));
      auto [l_ref, g_ref] = reference(logits, targets, static_cast<double>(rows) * scale);
      auto x = logits.clone();
      auto losses = kernels::cross_entropy_rows_to_grad(x, targets, scale);
      INFO("dtype " << dtype << " scale " << scale);
      CHECK(relative_error(losses.mean(), l_ref) < 2e-6);
      const double tol = dtype == torch::kFloat ? 1e-5 : dtype == torch::kHalf ? 1e-3 : 8e-3;
      CHECK(relative_error(x.to(torch::kFloat), g_ref) < tol);
      CHECK(x.narrow(1, live, vocab - live).abs().max().item<float>() == 0.f);
      // the target's element carries the one-hot term: (p - 1) * scale, of the sign of -scale
      auto at_target = x.gather(1, targets.view({-1, 1})).to(torch::kFloat);
      CHECK((at_target * scale < 0).all().item<bool>());
    }
  }
}

// kernels::embedding: at::embedding's output; its backward adds into an existing .grad (the CPU's
// index_put_, the CUDA kernel) what ATen's dense gradient holds, or returns that gradient.
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/kernels/embedding.h"
#include "model_files.h"

using namespace efftrain;
using efftrain::test::relative_error;

namespace {
// Tokens with long runs: half the positions one token (runs across many chunks of the kernel),
// the rest spread over the vocabulary.
torch::Tensor skewed_tokens(int64_t n, int64_t vocab, torch::Device d) {
  auto idx = torch::randint(0, vocab, {n}, torch::kLong);
  idx.narrow(0, 0, n / 2).fill_(3);
  return idx.index_select(0, torch::randperm(n, torch::kLong)).view({4, n / 4}).to(d);
}

// The gradient of sum(embedding(w, idx) * r) for w, with w.grad preset to `before` (undefined: none).
torch::Tensor grad_of(const torch::Tensor& w0, const torch::Tensor& idx, const torch::Tensor& r,
                      const torch::Tensor& before, bool ours) {
  auto w = w0.clone().requires_grad_(true);
  if (before.defined()) w.mutable_grad() = before.clone();
  auto y = ours ? kernels::embedding(w, idx) : at::embedding(w, idx);
  CHECK(torch::equal(y, at::embedding(w0, idx)));
  (y * r).sum().backward();
  return w.grad();
}

void check_embedding(torch::Device d, int64_t n, int64_t vocab, int64_t width, double tol) {
  torch::manual_seed(n + width);
  auto w = torch::randn({vocab, width}).to(d), idx = skewed_tokens(n, vocab, d);
  auto r = torch::randn({4, n / 4, width}).to(d), before = torch::randn({vocab, width}).to(d);
  const auto dense = grad_of(w, idx, r, {}, false);
  CHECK(torch::equal(grad_of(w, idx, r, {}, true), dense));  // no .grad: ATen's dense gradient itself
  const auto added = grad_of(w, idx, r, before, true);
  CHECK(relative_error(added, before + dense) < tol);
  CHECK(torch::equal(added, grad_of(w, idx, r, before, true)));  // a fixed order: the same bits again
}
}  // namespace

TEST_CASE("kernels::embedding on the CPU: at::embedding, its gradient added into an existing .grad") {
  check_embedding(torch::kCPU, 400, 50, 12, 1e-6);
}

TEST_CASE("gpu: kernels::embedding adds the rows' gradients into .grad in a fixed order", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  // rows of 768 (GPT-2's width: six float4 per lane) and of 20 (lanes idle); runs up to 1024
  // positions long (32 chunks), and 2 x 1024 rows beside them
  for (auto [n, width] : std::vector<std::pair<int64_t, int64_t>>{{4096, 768}, {2048, 20}, {4, 8}}) {
    INFO("positions " << n << " width " << width);
    check_embedding(torch::kCUDA, n, 1000, width, 1e-6);
  }
}

// kernels::mlp off CUDA: ATen's ops, the GELU output kept or recomputed in backward, with and
// without the second bias (the GPU path is in tests/unit/models/gpt2_gpu_test.cpp).
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/kernels/mlp.h"

using namespace efftrain;

TEST_CASE("kernels::mlp on the CPU is linear, GELU (tanh), linear: output and gradients, GELU output kept or recomputed") {
  torch::manual_seed(0);
  const int64_t width = 8, hidden = 32, out = 6;
  const auto x = torch::randn({3, 5, width}, torch::kDouble), r = torch::randn({3, 5, out}, torch::kDouble);
  const auto w1 = torch::randn({hidden, width}, torch::kDouble), b1 = torch::randn({hidden}, torch::kDouble);
  const auto w2 = torch::randn({out, hidden}, torch::kDouble), b2 = torch::randn({out}, torch::kDouble);
  CHECK(std::string(kernels::mlp_path(x, width, hidden)) == "aten");
  for (bool with_b2 : {true, false}) {
    // the reference: the ops written out
    std::vector<torch::Tensor> ref_leaves = {x.clone().requires_grad_(true), w1.clone().requires_grad_(true),
                                             b1.clone().requires_grad_(true), w2.clone().requires_grad_(true),
                                             b2.clone().requires_grad_(true)};
    const auto& l = ref_leaves;
    auto y_ref = torch::gelu(l[0].matmul(l[1].t()) + l[2], "tanh").matmul(l[3].t());
    if (with_b2) y_ref = y_ref + l[4];
    (y_ref * r).sum().backward();
    for (bool keep : {true, false}) {
      INFO("second bias " << with_b2 << ", GELU output " << (keep ? "kept" : "recomputed"));
      std::vector<torch::Tensor> v = {x.clone().requires_grad_(true), w1.clone().requires_grad_(true),
                                      b1.clone().requires_grad_(true), w2.clone().requires_grad_(true),
                                      b2.clone().requires_grad_(true)};
      auto y = kernels::mlp(v[0], v[1], v[2], v[3], with_b2 ? v[4] : torch::Tensor(), keep);
      REQUIRE(y.sizes() == y_ref.sizes());
      CHECK(torch::allclose(y, y_ref, 1e-12, 1e-12));
      (y * r).sum().backward();
      for (int i = 0; i < (with_b2 ? 5 : 4); ++i) {
        INFO("input " << i << " (x, w1, b1, w2, b2)");
        REQUIRE(v[i].grad().defined());
        CHECK(torch::allclose(v[i].grad(), l[i].grad(), 1e-12, 1e-12));
      }
      if (!with_b2) CHECK_FALSE(v[4].grad().defined());
    }
  }
}

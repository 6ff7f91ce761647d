// kernels::conv1x1 on the CPU: the products and the routing of gradients are device-agnostic
// (the GPU runs them in bf16 under autocast; gpu_test.cpp).
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/kernels/conv.h"
#include "helpers.h"

using namespace efftrain;

TEST_CASE("conv1x1: a 1x1 convolution as matrix products, its input passed on, gives at::conv2d's values and "
          "gradients") {
  torch::manual_seed(7);
  const auto cl = torch::MemoryFormat::ChannelsLast;
  const auto x0 = torch::randn({2, 8, 5, 3}).contiguous(cl), w0 = torch::randn({8, 8, 1, 1}).contiguous(cl);
  const auto r1 = torch::randn({2, 8, 5, 3}).contiguous(cl), r2 = torch::randn({2, 8, 5, 3}).contiguous(cl);
  // shared: the shortcut and the convolution's output meet in an add, whose backward hands the
  // same tensor to both (conv1x1 must not add into it in place); else the shortcut's gradient is
  // a tensor of its own (the in-place path). prior: w.grad there before backward (weight_grad adds).
  for (const bool shared : {false, true})
    for (const bool prior : {false, true}) {
      INFO("shared " << shared << ", prior " << prior);
      auto run = [&](bool ours) {
        auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
        if (prior) w.mutable_grad() = torch::full_like(w, 0.5);
        torch::Tensor y, z;
        if (ours) {
          auto o = kernels::conv1x1(x, w, /*pass_input=*/true);
          y = o[0], z = o[1];
        } else {
          y = at::conv2d(x, w), z = x;
        }
        auto loss = shared ? ((y + z) * r1).sum() : (y * r1).sum() + (z.relu() * r2).sum();
        loss.backward();
        return std::vector<torch::Tensor>{y.detach(), x.grad(), w.grad()};
      };
      const auto ref = run(false), ours = run(true);
      CHECK(ours[0].is_contiguous(torch::MemoryFormat::ChannelsLast));
      CHECK(ours[2].sizes() == w0.sizes());
      for (int i = 0; i < 3; ++i) {
        INFO("tensor " << i);
        CHECK(torch::allclose(ours[i], ref[i], 1e-5, 1e-5));
      }
    }
  // Without passing the input on: one output, the same convolution.
  auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  auto o = kernels::conv1x1(x, w, false);
  REQUIRE(o.size() == 1);
  (o[0] * r1).sum().backward();
  auto xr = x0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true);
  (at::conv2d(xr, wr) * r1).sum().backward();
  CHECK(torch::allclose(x.grad(), xr.grad(), 1e-5, 1e-5));
  CHECK(torch::allclose(w.grad(), wr.grad(), 1e-5, 1e-5));
  CHECK_THROWS(kernels::conv1x1(x0, torch::randn({8, 8, 3, 3}), false));
}

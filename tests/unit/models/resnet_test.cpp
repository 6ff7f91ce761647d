#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/models/models.h"
#include "efftrain/tasks/task.h"

using namespace efftrain;

TEST_CASE("ResNet-50 with the CIFAR stem has exactly 23,520,842 parameters") {
  models::ResNetImpl m(3, 64, {3, 4, 6, 3}, 10, false);
  CHECK(count_parameters(m) == 23520842);
  CHECK(m.blocks().size() == 16);
}

TEST_CASE("ResNet output shapes, and zero-init of the last BN gamma") {
  models::ResNetImpl m(3, 4, {1, 1}, 10, /*zero_init_residual=*/true);
  m.eval();
  auto y = m.forward(torch::randn({2, 3, 32, 32}));
  CHECK(y.sizes() == torch::IntArrayRef({2, 10}));
  for (const auto& kv : m.named_parameters())
    if (kv.key().find("bn3.weight") != std::string::npos) CHECK(kv.value().abs().sum().item<float>() == 0.f);
}

TEST_CASE("FLOPs come from the layer shapes (hand count for a one-block ResNet)") {
  // width 4, blocks {1}, 8x8 input: stem 3x3 3->4 at 8x8; bottleneck 1x1 4->4, 3x3 4->4,
  // 1x1 4->16 at 8x8, downsample 1x1 4->16 at 8x8; fc 16->10. FLOPs = 2 x multiply-adds.
  models::ResNetImpl m(3, 4, {1}, 10, false);
  const double macs = 3 * 4 * 9 * 64 + 4 * 4 * 64 + 4 * 4 * 9 * 64 + 4 * 16 * 64 + 4 * 16 * 64 + 16 * 10;
  CHECK(m.forward_flops(8) == 2 * macs);
  // ResNet-50 on 32x32: about 1.30 G multiply-adds.
  models::ResNetImpl r50(3, 64, {3, 4, 6, 3}, 10, false);
  CHECK(r50.forward_flops(32) > 2 * 1.29e9);
  CHECK(r50.forward_flops(32) < 2 * 1.31e9);
}

TEST_CASE("the stride of a bottleneck stage sits on the 3x3 conv (v1.5)") {
  models::BottleneckImpl b(64, 32, 2);
  for (const auto& kv : b.named_children()) {
    if (auto* c = kv.value()->as<torch::nn::Conv2dImpl>()) {
      const int64_t k = c->options.kernel_size()->at(0), s = c->options.stride()->at(0);
      if (kv.key() == "conv1" || kv.key() == "conv3") CHECK(s == 1);
      if (kv.key() == "conv2") CHECK((k == 3 && s == 2));
    }
  }
}

TEST_CASE("fused_bn_relu, conv_grads_in_place and recompute_bn_relu off the GPU run ATen's ops: the same training "
          "step") {
  auto step = [](bool fused) {
    torch::manual_seed(5);
    models::ResNetImpl m(3, 4, {1, 1}, 10, false);
    m.train();
    m.set_fused_bn_relu(fused);
    m.set_conv_grads_in_place(fused);
    m.set_recompute_bn_relu(fused);
    auto x = torch::randn({4, 3, 8, 8});
    auto loss = m.forward(x).square().mean();
    loss.backward();
    std::vector<torch::Tensor> out{loss.detach()};
    for (auto& p : m.parameters()) out.push_back(p.grad());
    for (auto& b : m.buffers()) out.push_back(b.clone());
    return std::make_pair(out, m.bn_kernel() + " " + m.conv_grads() + " " + std::to_string(m.bn_relu_remade()));
  };
  const auto [ops, ops_kernel] = step(false);
  const auto [fused, fused_kernel] = step(true);
  CHECK(ops_kernel == "aten autograd 0");
  CHECK(fused_kernel == "aten autograd 0");  // no CUDA here: the fallback, nothing left to remake
  REQUIRE(ops.size() == fused.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    INFO("tensor " << i);
    CHECK(torch::equal(ops[i], fused[i]));
  }
}

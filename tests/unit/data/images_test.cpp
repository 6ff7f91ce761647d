#include <catch2/catch_test_macros.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "efftrain/data/images.h"

using namespace efftrain;

TEST_CASE("the synthetic image set is deterministic and has class structure") {
  config::DataConfig c;
  c.train_samples = 200;
  c.eval_samples = 50;
  c.image_size = 8;
  auto a = data::make_synthetic_images(c), b = data::make_synthetic_images(c);
  CHECK(torch::equal(a.train.images, b.train.images));
  CHECK(torch::equal(a.eval.labels, b.eval.labels));
  CHECK(a.train.images.sizes() == torch::IntArrayRef({200, 3, 8, 8}));
  CHECK(a.train.images.dtype() == torch::kUInt8);
  // Examples of one class are closer to their class mean than to another class's mean.
  auto x = a.train.images.to(torch::kFloat).flatten(1);
  auto y = a.train.labels;
  auto m0 = x.index({y == 0}).mean(0), m1 = x.index({y == 1}).mean(0);
  auto x0 = x.index({y == 0});
  CHECK(((x0 - m0).pow(2).sum(1) < (x0 - m1).pow(2).sum(1)).to(torch::kFloat).mean().item<float>() > 0.9f);
}

TEST_CASE("crop and flip keep shapes; a flip mirrors exactly") {
  auto x = torch::arange(2 * 3 * 4 * 4, torch::kFloat).view({2, 3, 4, 4});
  auto gen = at::detail::createCPUGenerator(3);
  auto y = data::random_crop_flip(x, 0, gen);
  CHECK(y.sizes() == x.sizes());
  for (int i = 0; i < 2; ++i) {
    const bool same = torch::equal(y[i], x[i]);
    const bool mirrored = torch::equal(y[i], x[i].flip({2}));
    CHECK((same || mirrored));
  }
  auto z = data::random_crop_flip(x, 2, gen);
  CHECK(z.sizes() == x.sizes());
}

TEST_CASE("normalize maps uint8 through /255, mean and std per channel") {
  auto u8 = torch::full({1, 2, 1, 1}, 255, torch::kUInt8);
  auto y = data::Normalizer({0.5, 0.0}, {0.25, 1.0}, u8.device())(u8);
  CHECK(y[0][0][0][0].item<float>() == 2.0f);
  CHECK(y[0][1][0][0].item<float>() == 1.0f);
}

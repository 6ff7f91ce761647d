#include "efftrain/data/images.h"
#include "efftrain/data/loader.h"

#include <ATen/CPUGeneratorImpl.h>

namespace efftrain::data {

ImageSet make_synthetic_images(const config::DataConfig& cfg) {
  torch::NoGradGuard no_grad;
  const int64_t C = cfg.channels, S = cfg.image_size, K = cfg.classes;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0x5eed5eedULL);
  // Smooth class templates: low-resolution noise upsampled to the image size.
  const int64_t low = std::max<int64_t>(2, S / 4);
  auto coarse = torch::randn({K, C, low, low}, gen, torch::kFloat);
  auto templates = torch::nn::functional::interpolate(
      coarse, torch::nn::functional::InterpolateFuncOptions()
                  .size(std::vector<int64_t>{S, S})
                  .mode(torch::kBilinear)
                  .align_corners(false));
  auto make = [&](int64_t n) {
    ImageSplit s;
    s.labels = torch::randint(0, K, {n}, gen, torch::kLong);
    auto x = templates.index_select(0, s.labels);
    x = x + cfg.noise * torch::randn({n, C, S, S}, gen, torch::kFloat);
    x = x + 0.3 * torch::randn({n, 1, 1, 1}, gen, torch::kFloat);  // brightness
    // Map roughly [-2.5, 2.5] to [0, 255].
    s.images = ((x * 0.2 + 0.5) * 255.0).round().clamp(0, 255).to(torch::kUInt8);
    return s;
  };
  ImageSet set;
  set.train = make(cfg.train_samples);
  set.eval = make(cfg.eval_samples);
  set.classes = K;
  set.mean.assign(C, 0.5);
  set.std.assign(C, 0.2);
  return set;
}

torch::Tensor random_crop_flip(const torch::Tensor& x, int64_t pad, torch::Generator& gen) {
  const int64_t B = x.size(0);
  auto oy = torch::randint(0, 2 * pad + 1, {B}, gen, torch::kLong);
  auto ox = torch::randint(0, 2 * pad + 1, {B}, gen, torch::kLong);
  auto flip = torch::rand({B}, gen, torch::kFloat) < 0.5;
  return crop_flip(x, pad, oy.to(x.device()), ox.to(x.device()), flip.to(x.device()));
}

Normalizer::Normalizer(const std::vector<double>& mean, const std::vector<double>& std, torch::Device device) {
  const auto C = static_cast<int64_t>(mean.size());
  auto f = torch::TensorOptions().dtype(torch::kFloat);
  mean_ = torch::tensor(std::vector<float>(mean.begin(), mean.end()), f).view({1, C, 1, 1}).to(device);
  std_ = torch::tensor(std::vector<float>(std.begin(), std.end()), f).view({1, C, 1, 1}).to(device);
}

torch::Tensor Normalizer::operator()(const torch::Tensor& u8) const {
  return (u8.to(torch::kFloat) / 255.0 - mean_) / std_;
}

}  // namespace efftrain::data

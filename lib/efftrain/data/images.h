// In-memory image classification data: the synthetic set, shared augmentation.
#pragma once

#include <torch/torch.h>

#include "efftrain/config/config.h"

namespace efftrain::data {

struct ImageSplit {
  torch::Tensor images;  // uint8 [N, C, H, W]
  torch::Tensor labels;  // int64 [N]
};

struct ImageSet {
  ImageSplit train, eval;
  std::vector<double> mean, std;  // per-channel normalization (of pixel/255)
  int64_t classes = 0;
};

// A deterministic synthetic set a small CNN can learn: each class has a fixed smooth template
// (drawn once from a fixed seed), each example is its class template plus pixel noise and a
// random brightness shift, quantized to uint8 like real images.
ImageSet make_synthetic_images(const config::DataConfig& cfg);

// Random crop (zero padding `pad`) and horizontal flip of a float batch [B,C,H,W], drawn from
// `gen`; vectorized, so it runs on the device as well.
torch::Tensor random_crop_flip(const torch::Tensor& x, int64_t pad, torch::Generator& gen);

// uint8 [B,C,H,W] -> float, scaled to [0,1] and normalized per channel. The per-channel
// constants are put on the device once (built per batch from the host vectors they would cross
// as two pageable copies, each of which may wait for the stream to drain).
class Normalizer {
 public:
  Normalizer(const std::vector<double>& mean, const std::vector<double>& std, torch::Device device);
  torch::Tensor operator()(const torch::Tensor& u8) const;

 private:
  torch::Tensor mean_, std_;  // float [1,C,1,1] on the device
};

}  // namespace efftrain::data

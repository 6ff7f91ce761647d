// Image models. Each reports its forward FLOPs per example from its own layer shapes.
#pragma once

#include <torch/torch.h>

namespace efftrain::models {

// Multiply-adds x2 of a convolution producing an out_h x out_w map.
double conv_flops(int64_t in_ch, int64_t out_ch, int64_t kernel, int64_t out_h, int64_t out_w);
double linear_flops(int64_t in, int64_t out);

class ImageClassifier : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // Forward FLOPs of one example of size channels x size x size.
  virtual double forward_flops(int64_t image_size) const = 0;
};

// A small CNN for tests and the quickstart: `depth` stages of conv3x3-BN-ReLU (stride 2 after
// the first), channels width, 2*width, ..., then global average pooling and a linear head.
class SmallCnnImpl : public ImageClassifier {
 public:
  SmallCnnImpl(int64_t in_channels, int64_t width, int64_t depth, int64_t classes);
  torch::Tensor forward(torch::Tensor x) override;
  double forward_flops(int64_t image_size) const override;

 private:
  struct Stage {
    torch::nn::Conv2d conv{nullptr};
    torch::nn::BatchNorm2d bn{nullptr};
    int64_t in, out, stride;
  };
  std::vector<Stage> stages_;
  torch::nn::Linear head_{nullptr};
  int64_t classes_;
};

}  // namespace efftrain::models

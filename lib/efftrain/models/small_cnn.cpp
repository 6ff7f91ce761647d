#include "efftrain/models/models.h"

namespace efftrain::models {

double conv_flops(int64_t in_ch, int64_t out_ch, int64_t kernel, int64_t out_h, int64_t out_w) {
  return 2.0 * in_ch * out_ch * kernel * kernel * out_h * out_w;
}
double linear_flops(int64_t in, int64_t out) { return 2.0 * in * out; }

SmallCnnImpl::SmallCnnImpl(int64_t in_channels, int64_t width, int64_t depth, int64_t classes, bool batch_norm)
    : classes_(classes) {
  int64_t in = in_channels;
  for (int64_t i = 0; i < depth; ++i) {
    Stage s;
    s.in = in;
    s.out = width << i;
    s.stride = i == 0 ? 1 : 2;
    s.conv = register_module(
        "conv" + std::to_string(i),
        torch::nn::Conv2d(torch::nn::Conv2dOptions(s.in, s.out, 3).stride(s.stride).padding(1).bias(!batch_norm)));
    if (batch_norm) s.bn = register_module("bn" + std::to_string(i), torch::nn::BatchNorm2d(s.out));
    torch::nn::init::kaiming_normal_(s.conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    stages_.push_back(s);
    in = s.out;
  }
  head_ = register_module("head", torch::nn::Linear(in, classes));
}

torch::Tensor SmallCnnImpl::forward(torch::Tensor x) {
  for (auto& s : stages_) {
    x = s.conv->forward(x);
    x = torch::relu(s.bn ? s.bn->forward(x) : x);
  }
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return head_->forward(x);
}

double SmallCnnImpl::forward_flops(int64_t image_size) const {
  double f = 0;
  int64_t size = image_size;
  for (const auto& s : stages_) {
    size = (size + 2 - 3) / s.stride + 1;
    f += conv_flops(s.in, s.out, 3, size, size);
  }
  return f + linear_flops(stages_.back().out, classes_);
}

}  // namespace efftrain::models

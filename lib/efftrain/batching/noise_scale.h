// The gradient noise scale B_noise = tr(Sigma) / |G|^2 (McCandlish et al., "An Empirical Model
// of Large-Batch Training", appendix A) from two gradient norms the step already has: the
// gradient of one micro-batch (b examples) and the accumulated gradient (B = k*b examples):
//   E|g_b|^2 = |G|^2 + tr(Sigma)/b,   E|g_B|^2 = |G|^2 + tr(Sigma)/B
//   |G|^2   ~ (B |g_B|^2 - b |g_b|^2) / (B - b)
//   tr(Sigma) ~ (|g_b|^2 - |g_B|^2) / (1/b - 1/B)
// Each estimate is smoothed by an EMA with bias correction. Everything stays on the device;
// only value() reads it back.
#pragma once

#include <torch/torch.h>

namespace efftrain {

class NoiseScaleEstimator {
 public:
  NoiseScaleEstimator(double ema, torch::Device device);
  // Adds one observation: squared norms of a b-example and a B-example gradient (device
  // scalars, already unscaled); `valid` (device bool, may be undefined) drops it when false.
  void observe(const torch::Tensor& small_sq, double b, const torch::Tensor& big_sq, double B,
               const torch::Tensor& valid = {});
  // Bias-corrected estimates (host reads).
  double g2() const;
  double trace_sigma() const;
  double b_noise() const;  // tr(Sigma) / |G|^2; +inf when |G|^2 <= 0
  int64_t observations() const { return n_.item<int64_t>(); }
  // Resume: the EMA sums and the count.
  void save(torch::serialize::OutputArchive& out) const;
  void load(torch::serialize::InputArchive& in);

 private:
  double beta_;
  torch::Tensor g2_, tr_, weight_, n_;  // EMA sums, EMA of 1 (for bias correction), count
};

}  // namespace efftrain

#include "efftrain/batching/noise_scale.h"

#include <limits>

#include "efftrain/engine/state.h"

namespace efftrain {

NoiseScaleEstimator::NoiseScaleEstimator(double ema, torch::Device device) : beta_(ema) {
  auto f = torch::TensorOptions().device(device).dtype(torch::kDouble);
  g2_ = torch::zeros({}, f);
  tr_ = torch::zeros({}, f);
  weight_ = torch::zeros({}, f);
  n_ = torch::zeros({}, f.dtype(torch::kLong));
}

void NoiseScaleEstimator::observe(const torch::Tensor& small_sq, double b, const torch::Tensor& big_sq, double B,
                                  const torch::Tensor& valid) {
  torch::NoGradGuard ng;
  auto s = small_sq.to(torch::kDouble), l = big_sq.to(torch::kDouble);
  auto g2 = (B * l - b * s) / (B - b);
  auto tr = (s - l) / (1.0 / b - 1.0 / B);
  auto keep = (s.isfinite().logical_and(l.isfinite())).to(torch::kDouble);
  if (valid.defined()) keep = keep * valid.to(torch::kDouble);
  g2 = torch::nan_to_num(g2, 0.0, 0.0, 0.0);
  tr = torch::nan_to_num(tr, 0.0, 0.0, 0.0);
  // With keep = 0 the EMA does not move: beta_k = 1 - (1 - beta) * keep.
  auto one_minus = (1.0 - beta_) * keep;
  g2_.mul_(1.0 - one_minus).add_(one_minus * g2);
  tr_.mul_(1.0 - one_minus).add_(one_minus * tr);
  weight_.mul_(1.0 - one_minus).add_(one_minus);
  n_.add_(keep.to(torch::kLong));
}

void NoiseScaleEstimator::save(torch::serialize::OutputArchive& out) const {
  out.write("g2", g2_);
  out.write("trace", tr_);
  out.write("weight", weight_);
  out.write("n", n_);
}

void NoiseScaleEstimator::load(torch::serialize::InputArchive& in) {
  state::read_into(in, "g2", g2_);
  state::read_into(in, "trace", tr_);
  state::read_into(in, "weight", weight_);
  state::read_into(in, "n", n_);
}

double NoiseScaleEstimator::g2() const {
  const double w = weight_.item<double>();
  return w > 0 ? g2_.item<double>() / w : 0.0;
}
double NoiseScaleEstimator::trace_sigma() const {
  const double w = weight_.item<double>();
  return w > 0 ? tr_.item<double>() / w : 0.0;
}
double NoiseScaleEstimator::b_noise() const {
  const double g = g2();
  return g > 0 ? trace_sigma() / g : std::numeric_limits<double>::infinity();
}

}  // namespace efftrain

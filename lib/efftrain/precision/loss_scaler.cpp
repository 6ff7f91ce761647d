#include "efftrain/precision/loss_scaler.h"

#include <cmath>
#include <map>

#include "efftrain/engine/state.h"

namespace efftrain {

LossScaler::LossScaler(const config::PrecisionConfig& cfg, torch::Device device) : cfg_(cfg) {
  auto f = torch::TensorOptions().device(device).dtype(torch::kFloat);
  auto l = torch::TensorOptions().device(device).dtype(torch::kLong);
  scale_ = torch::full({}, std::ldexp(1.0, static_cast<int>(cfg.initial_scale_power)), f);
  found_inf_ = torch::zeros({}, f);
  good_steps_ = torch::zeros({}, f);
  hysteresis_ = torch::full({}, static_cast<double>(cfg.hysteresis), f);
  overflows_ = torch::zeros({}, l);
  min_streak_ = torch::zeros({}, l);
}

torch::Tensor LossScaler::unscale_and_check(const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard ng;
  found_inf_.zero_();
  auto inv = scale_.to(torch::kDouble).reciprocal().to(torch::kFloat);
  std::map<torch::ScalarType, std::vector<torch::Tensor>> by_dtype;
  for (const auto& g : grads)
    if (g.defined()) by_dtype[g.scalar_type()].push_back(g);
  for (auto& kv : by_dtype) at::_amp_foreach_non_finite_check_and_unscale_(kv.second, found_inf_, inv);
  return found_inf_;
}

void LossScaler::save(torch::serialize::OutputArchive& out) const {
  out.write("scale", scale_);
  out.write("good_steps", good_steps_);
  out.write("hysteresis", hysteresis_);
  out.write("overflows", overflows_);
  out.write("min_streak", min_streak_);
}

void LossScaler::load(torch::serialize::InputArchive& in) {
  state::read_into(in, "scale", scale_);
  state::read_into(in, "good_steps", good_steps_);
  state::read_into(in, "hysteresis", hysteresis_);
  state::read_into(in, "overflows", overflows_);
  state::read_into(in, "min_streak", min_streak_);
}

void LossScaler::update() {
  torch::NoGradGuard ng;
  const auto inf = found_inf_ > 0;
  const auto clean = inf.logical_not();
  const double min_scale = cfg_.min_loss_scale;
  // Overflow: absorb it while hysteresis lasts, else halve (not below the floor).
  const auto back_off = inf.logical_and(hysteresis_ <= 1);
  const auto at_floor = scale_ <= min_scale;
  min_streak_.copy_(torch::where(inf.logical_and(at_floor), min_streak_ + 1,
                                 torch::where(inf, min_streak_, torch::zeros_like(min_streak_))));
  overflows_.add_(inf.to(torch::kLong));
  hysteresis_.copy_(torch::where(inf.logical_and(back_off.logical_not()), hysteresis_ - 1, hysteresis_));
  // Clean step: count it; after `loss_scale_window` of them, double and restore hysteresis.
  good_steps_.copy_(torch::where(inf, torch::zeros_like(good_steps_), good_steps_ + 1));
  const auto grow = clean.logical_and(good_steps_ >= static_cast<double>(cfg_.loss_scale_window));
  auto next = torch::where(back_off, (scale_ * 0.5).clamp_min(min_scale), torch::where(grow, scale_ * 2.0, scale_));
  scale_.copy_(next);
  good_steps_.copy_(torch::where(grow, torch::zeros_like(good_steps_), good_steps_));
  hysteresis_.copy_(torch::where(grow, torch::full_like(hysteresis_, static_cast<double>(cfg_.hysteresis)), hysteresis_));
}

}  // namespace efftrain

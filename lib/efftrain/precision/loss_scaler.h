// Dynamic loss scaling with DeepSpeed's knobs, kept entirely on the device (no host sync per
// step): scale starts at 2^initial_scale_power; after `loss_scale_window` clean steps it
// doubles; an overflow skips the step, and once `hysteresis` overflows have been absorbed
// (counter reset at each growth) every overflow halves the scale, never below min_loss_scale.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "efftrain/config/config.h"

namespace efftrain {

class LossScaler {
 public:
  LossScaler(const config::PrecisionConfig& cfg, torch::Device device);

  torch::Tensor scale(const torch::Tensor& loss) const { return loss * scale_; }
  // Unscales the gradients in place (one multi-tensor kernel per dtype) and returns the
  // found-inf flag (float 0/1 on the device); the flag is reset first.
  torch::Tensor unscale_and_check(const std::vector<torch::Tensor>& grads);
  // Advances the state machine from the flag of the last unscale_and_check.
  void update();
  // Host reads (synchronize): for logs, reports and the divergence check.
  double current_scale() const { return scale_.item<double>(); }
  int64_t overflows() const { return overflows_.item<int64_t>(); }
  int64_t overflows_at_min_scale() const { return min_streak_.item<int64_t>(); }
  const torch::Tensor& scale_tensor() const { return scale_; }
  // Resume: the scale and the counters of the state machine.
  void save(torch::serialize::OutputArchive& out) const;
  void load(torch::serialize::InputArchive& in);
  const torch::Tensor& found_inf() const { return found_inf_; }

 private:
  config::PrecisionConfig cfg_;
  torch::Tensor scale_;       // float []
  torch::Tensor found_inf_;   // float []
  torch::Tensor good_steps_;  // float []: clean steps since the last overflow or growth
  torch::Tensor hysteresis_;  // float []: overflows still absorbed without backing off
  torch::Tensor overflows_;   // int64 []: overflows so far (= skipped steps)
  torch::Tensor min_streak_;  // int64 []: consecutive overflows with the scale at its floor
};

}  // namespace efftrain

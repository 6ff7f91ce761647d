// Accumulation: how many micro-batches make the next optimizer step.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <optional>

#include "efftrain/core/registry.h"

namespace efftrain {

class Accumulation {
 public:
  static constexpr const char* kKind = "accumulation";
  virtual ~Accumulation() = default;
  // Micro-batches for optimizer step `step` (1-based).
  virtual int64_t next_k(int64_t step) = 0;
  // After micro-batch `i` (0-based) of `k` has run backward; gradients are still scaled by
  // `loss_scale` (a device scalar, or undefined for no scaling).
  virtual void after_backward(int64_t i, int64_t k, const std::vector<torch::Tensor>& params,
                              const torch::Tensor& loss_scale) {}
  // Multi-process runs: whether after_sync wants the gradient norms.
  virtual bool wants_global_norm() const { return false; }
  // After the gradient sync of a step (device scalars, still scaled by `loss_scale`): the
  // squared norm of each rank's own accumulated gradient before the sync
  // (GradSync::local_sq_norm), summed over the ranks (undefined when the sync did not measure
  // it), and that of the rank-averaged gradient, the same on every rank.
  virtual void after_sync(const torch::Tensor& local_sq, const torch::Tensor& global_sq,
                          const torch::Tensor& loss_scale) {}
  // After the optimizer step; `found_inf` (device flag, may be undefined) marks a skipped step.
  virtual void after_step(int64_t step, const torch::Tensor& found_inf) {}
  // Resume: the state that shapes the rest of the run, written into and read from this
  // component's own archive of a checkpoint. Default: none.
  virtual void save_state(torch::serialize::OutputArchive& out) const {}
  virtual void load_state(torch::serialize::InputArchive& in) {}
  // Multiplier of the scheduled learning rate (the response to a batch change).
  virtual double lr_scale() const { return 1.0; }
  // The latest gradient noise scale estimate (samples), for components that measure one.
  virtual std::optional<double> noise_scale() const { return std::nullopt; }
  // policy.mode auto: stop adapting and run k micro-batches per step from optimizer step
  // `from_step` on (no more noise measurements). False when the component does not adapt.
  virtual bool freeze(int64_t k, int64_t from_step) { return false; }
  virtual nlohmann::json report() const = 0;
};

using AccumulationRegistry = Registry<Accumulation>;

}  // namespace efftrain

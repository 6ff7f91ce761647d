// Precision: the numeric format of the forward/backward pass and the loss-scaling state.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "efftrain/core/registry.h"

namespace efftrain {

class Precision {
 public:
  static constexpr const char* kKind = "precision";
  virtual ~Precision() = default;

  // RAII scope entered around each forward pass (autocast); nullptr when nothing changes.
  virtual std::shared_ptr<void> forward_scope() { return nullptr; }
  virtual torch::Tensor scale_loss(const torch::Tensor& loss) { return loss; }
  // Unscales gradients in place and records whether any is inf/NaN. Returns the device flag
  // (float 0/1) or an undefined tensor when the mode never skips steps.
  virtual torch::Tensor unscale_and_check(const std::vector<torch::Tensor>& params) { return {}; }
  // Advances the loss-scale state after a step. Throws TrainingFailed("diverged") when it can
  // no longer make progress.
  virtual void update() {}
  // Called where the trainer synchronizes anyway (log cadence): reads device-side counters,
  // records history, and throws TrainingFailed("diverged") when progress has stopped.
  virtual void check_health(int64_t step) {}
  // The current loss scale as a device scalar (undefined when there is none).
  virtual torch::Tensor loss_scale() const { return {}; }
  // Resume: the state that shapes the rest of the run, written into and read from this
  // component's own archive of a checkpoint. Default: none.
  virtual void save_state(torch::serialize::OutputArchive& out) const {}
  virtual void load_state(torch::serialize::InputArchive& in) {}
  virtual std::string compute_dtype() const = 0;  // "float32", "float16", "bfloat16"
  virtual nlohmann::json report() const = 0;
};

using PrecisionRegistry = Registry<Precision>;

}  // namespace efftrain

// Optimizer and learning-rate schedule interfaces.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "efftrain/core/registry.h"

namespace efftrain {

// The tensors an optimizer updates and, per tensor, whether weight decay applies.
struct ParamSet {
  std::vector<torch::Tensor> tensors;
  std::vector<bool> decay;
};

// Decay for matrices and convolution kernels; none for biases, norms and other 1-D tensors.
inline ParamSet default_param_set(const std::vector<torch::Tensor>& params) {
  ParamSet s;
  s.tensors = params;
  for (const auto& p : params) s.decay.push_back(p.dim() >= 2);
  return s;
}

class Optimizer {
 public:
  static constexpr const char* kKind = "optimizer";
  virtual ~Optimizer() = default;
  // Binds the tensors to optimize (called once, after the model is on its device): the model's
  // parameters, or this rank's shards of them (zero2).
  virtual void attach(const ParamSet& params) = 0;
  // One update at learning rate `lr`. `found_inf` (a device flag, may be undefined) skips it.
  virtual void step(double lr, const torch::Tensor& found_inf) = 0;
  virtual void zero_grad() = 0;
  // Saves / restores the optimizer state (for resume). load() throws UserError naming the
  // file when it does not match the attached parameters.
  virtual void save(const std::string& path) const = 0;
  virtual void load(const std::string& path) = 0;
  // Bytes of optimizer state held by this rank.
  virtual int64_t state_bytes() const = 0;
  virtual nlohmann::json report() const = 0;
};

class Schedule {
 public:
  static constexpr const char* kKind = "schedule";
  virtual ~Schedule() = default;
  // Learning rate for optimizer step `step` (1-based) after `samples` training examples.
  virtual double lr(int64_t step, int64_t samples) const = 0;
  virtual nlohmann::json report() const = 0;
};

using OptimizerRegistry = Registry<Optimizer>;
using ScheduleRegistry = Registry<Schedule>;

}  // namespace efftrain

// GradSync: gradient communication across ranks.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "efftrain/core/registry.h"

namespace efftrain {

class GradSync {
 public:
  static constexpr const char* kKind = "grad_sync";
  virtual ~GradSync() = default;
  virtual void attach(const std::vector<torch::Tensor>& params) = 0;
  // Called before each micro-batch's backward; `last` is true for the one that communicates.
  virtual void before_backward(bool last) = 0;
  // Waits for the gradient communication of this step to finish.
  virtual void finish() = 0;
  virtual nlohmann::json report() const = 0;
};

using GradSyncRegistry = Registry<GradSync>;

}  // namespace efftrain

// Gradient helpers. defined_grads: the gradients of the parameters that have one (undefined
// .grad skipped), in order.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <vector>

namespace efftrain {

inline std::vector<torch::Tensor> defined_grads(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  grads.reserve(params.size());
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

// The squared L2 norm of all of `tensors` together, as a device scalar (one multi-tensor norm
// kernel; no host sync), in `dtype` or else in the tensors' own.
inline torch::Tensor squared_norm(const std::vector<torch::Tensor>& tensors,
                                  std::optional<torch::ScalarType> dtype = std::nullopt) {
  auto norms = torch::stack(at::_foreach_norm(tensors, 2));
  return (dtype ? norms.to(*dtype) : norms).pow(2).sum();
}

}  // namespace efftrain

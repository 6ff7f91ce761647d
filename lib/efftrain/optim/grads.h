// The gradients of the parameters that have one (undefined .grad skipped), in order.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace efftrain {

inline std::vector<torch::Tensor> defined_grads(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  grads.reserve(params.size());
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

}  // namespace efftrain

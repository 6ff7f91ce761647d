// A differentiable embedding lookup whose backward can add into the weight's .grad itself.
#pragma once

#include <torch/torch.h>

namespace efftrain::kernels {

// w[idx] (at::embedding, no padding index). Backward: where kernels::grad_in_place(w) holds, the
// looked-up rows' gradients are added into w.grad -- on CUDA by kernels/embedding.cu (fp32, width
// a multiple of 4: positions sorted by token, each token's rows summed in that order, one
// read-modify-write of the rows looked up), elsewhere by index_put_ with accumulate -- instead
// of ATen's dense [vocab, width] gradient that autograd then adds to w.grad (two passes over
// the whole table); otherwise that dense gradient, as at::embedding's backward.
torch::Tensor embedding(const torch::Tensor& w, const torch::Tensor& idx);

}  // namespace efftrain::kernels

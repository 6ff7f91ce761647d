#include "efftrain/kernels/embedding.h"

#include "efftrain/kernels/linear.h"

#ifdef EFFTRAIN_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "efftrain/kernels/glue.h"
#endif

namespace efftrain::kernels {

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// grad += the rows of g [n, width] at the tokens idx [n] (see embedding.h).
void add_rows(const torch::Tensor& grad, const torch::Tensor& idx, const torch::Tensor& g) {
#ifdef EFFTRAIN_WITH_KERNELS
  const int64_t n = idx.numel(), width = g.size(1);
  if (g.is_cuda() && g.scalar_type() == torch::kFloat && grad.scalar_type() == torch::kFloat && width % 4 == 0 &&
      g.is_contiguous() && grad.is_contiguous() && aligned16(g) && aligned16(grad)) {
    const c10::cuda::CUDAGuard guard(g.device());
    const auto [sorted, perm] = idx.sort(/*stable=*/true, 0, /*descending=*/false);
    auto scratch = torch::empty({embedding_backward_scratch(n, width)}, g.options());
    check_launch(embedding_backward_add(sorted.data_ptr<int64_t>(), perm.data_ptr<int64_t>(), g.data_ptr<float>(), n,
                                        width, grad.data_ptr<float>(), scratch.data_ptr<float>(), stream()),
                 "embedding backward");
    return;
  }
#endif
  grad.index_put_({idx}, g.to(grad.scalar_type()), /*accumulate=*/true);
}

struct Embedding : torch::autograd::Function<Embedding> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& w, const torch::Tensor& idx) {
    ctx->save_for_backward({w, idx});
    return at::embedding(w, idx);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &w = s[0], &idx = s[1];
    if (!grad_in_place(w, grads[0].device()))
      return {at::embedding_dense_backward(grads[0], idx, w.size(0), /*padding_idx=*/-1, false), torch::Tensor()};
    add_rows(w.grad(), idx.reshape({-1}).to(torch::kLong), grads[0].reshape({-1, w.size(1)}).contiguous());
    return {torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

torch::Tensor embedding(const torch::Tensor& w, const torch::Tensor& idx) { return Embedding::apply(w, idx); }

}  // namespace efftrain::kernels

// fp16/bf16 copies of fp32 parameters, all refreshed by one kernel. Under autocast each use of a
// weight casts it: a kernel per parameter per forward (97 for GPT-2 small, each a node of the
// captured graph). ParamCasts::refresh casts every parameter it holds at once into buffers it
// keeps (the same addresses each time, so a captured graph replays the refresh), and
// kernels::param_cast (linear.h) hands out those copies while they are current.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <vector>

namespace efftrain::kernels {

class ParamCasts {
 public:
  // The fp32 tensors to copy, dense in any layout (contiguous, channels_last: each copy keeps its
  // source's strides); the others, and those off CUDA, are left to autocast.
  explicit ParamCasts(std::vector<torch::Tensor> tensors);
  ~ParamCasts();
  ParamCasts(const ParamCasts&) = delete;
  ParamCasts& operator=(const ParamCasts&) = delete;

  // Casts every tensor to dt (fp16 or bf16) on the current stream: one launch where the project's
  // kernels were built, else a cast each. From here until a tensor changes (its version or
  // storage), current(t, dt) returns its copy.
  void refresh(at::ScalarType dt);

  // No copy is handed out until the next refresh.
  void invalidate();

  // The copy of t in dt that the last refresh made, if t is one of the tensors of a live
  // ParamCasts and has not changed since; else undefined.
  static torch::Tensor current(const torch::Tensor& t, at::ScalarType dt);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A model's casts before a forward on x: made from tensors() on first use and refreshed where
// `wanted` and the forward runs on CUDA under fp16/bf16 autocast with gradients taken; else
// invalidated (no forward reads copies made before an optimizer step).
void refresh_casts(std::shared_ptr<ParamCasts>& casts, const torch::Tensor& x, bool wanted,
                   const std::function<std::vector<torch::Tensor>()>& tensors);

}  // namespace efftrain::kernels

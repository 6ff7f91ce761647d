// GradSync: gradient communication across ranks, and which tensors the optimizer updates.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "efftrain/core/registry.h"
#include "efftrain/optim/optimizer.h"

namespace efftrain {

class GradSync {
 public:
  static constexpr const char* kKind = "grad_sync";
  virtual ~GradSync() = default;
  // Binds the model (every rank starts from rank 0's parameters and buffers) and returns what
  // the optimizer updates: the model's parameters (none, ddp) or this rank's shards (zero2).
  virtual ParamSet attach(torch::nn::Module& model) = 0;
  // Called before each micro-batch's backward; `last` is true for the one that communicates.
  virtual void before_backward(bool last) = 0;
  // Waits for this step's communication: afterwards the optimizer tensors hold the global
  // (rank-averaged) gradient, or this rank's shard of it.
  virtual void finish() = 0;
  // Whether each rank holds a different part of the gradient (zero2): then what the step
  // derives from the gradients (the found-inf flag, squared norms) is summed over the ranks.
  virtual bool sharded() const { return false; }
  // After the optimizer step (zero2: all-gather the updated parameters).
  virtual void after_step() {}
  // Each rank's own accumulated gradient, which the sync overwrites (the noise estimate of
  // adaptive k needs it): after measure_local_norm(), the micro-batch that communicates also
  // takes the squared norm (fp64) of every bucket as it is sent, before the division by the
  // world size, in the graph too where the collectives are captured. local_sq_norm() is their
  // sum after finish(): a device scalar, still scaled by the loss scale, this rank's alone.
  // Undefined where nothing communicates.
  virtual void measure_local_norm() {}
  virtual torch::Tensor local_sq_norm() const { return {}; }

  // Static gradients, for a micro-step replayed from a CUDA graph (engine/step_graph.h): every
  // parameter gets a persistent, zeroed .grad in memory this sync owns, which backward then
  // accumulates into in place. Afterwards zero_static_grads() replaces the optimizer's
  // zero_grad(), and unless the communication is captured too (below) before_backward() is not
  // called (the hooks stay idle) and finish() communicates every bucket at once after the last
  // micro-batch instead of overlapping it with backward.
  virtual void use_static_grads() = 0;
  virtual void zero_static_grads() = 0;
  // Whether this sync communicates (ddp, zero2). With static gradients its collectives can also
  // be captured: before_backward(true) arms the hooks during the capture of the last
  // micro-batch, finish() is captured after the backward (it sends what is left and waits), and
  // after each replay of that graph communicated_in_graph() makes the step's finish() a no-op.
  virtual bool communicates() const { return false; }
  // Whether its collectives go out during backward (distributed.overlap_comm), so that a graph
  // may hold them; else finish() sends everything after backward.
  virtual bool overlaps_backward() const { return false; }
  virtual void communicated_in_graph() {}
  // finish() inside a capture: the sends and waits only, no per-step bookkeeping.
  virtual void finish_captured() { finish(); }
  virtual nlohmann::json report() const = 0;
};

using GradSyncRegistry = Registry<GradSync>;

}  // namespace efftrain

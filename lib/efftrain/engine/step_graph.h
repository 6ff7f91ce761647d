// engine::StepGraph: one micro-batch's forward and backward replayed from a CUDA graph
// (train.cuda_graph; design §1), with the gradient communication of several processes. The
// optimizer step, loss-scale update and clipping stay eager: they are a few launches, and they
// keep the learning rate, adaptive k and the scaler host-driven. What the graph needs:
//  - static inputs: each micro-batch is copied into tensors captured once (a batch of another
//    shape runs eagerly, into the same gradients);
//  - static gradients: GradSync::use_static_grads() gives every parameter a persistent .grad that
//    backward accumulates into; zero_grad() here replaces the optimizer's;
//  - 1/k as a device tensor, so a change of k (adaptive accumulation) needs no new capture;
//  - with several processes, a second graph for the micro-batch that communicates.
// Before capture, warm-up iterations on a side stream initialize cuBLAS/cuDNN (autotuning) and
// the allocator; the model's buffers (BatchNorm statistics) and the RNG states are restored after
// them, so the trajectory is the one the eager loop takes.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "efftrain/engine/trainer.h"

namespace efftrain {

class StepGraph {
 public:
  // For a run with train.cuda_graph on CUDA: makes one non-default stream current for the rest
  // of the process (until the returned guard goes). The capture needs a non-default stream,
  // and autograd nodes that live across steps (the AccumulateGrad nodes the gradient-sync
  // hooks hold) must belong to the stream the graph is captured on. Null elsewhere.
  static std::shared_ptr<void> run_on_own_stream(torch::Device device);
  // Why the micro-step of this run cannot be captured; empty when it can.
  static std::string unsupported(const config::ExperimentConfig& cfg, torch::Device device);

  // `capture` false runs the same data flow (static inputs, static gradients, communication
  // after backward) eagerly: what CPU tests exercise (EFFTRAIN_STATIC_GRADS=1).
  StepGraph(Components& parts, torch::Device device, bool capture);
  ~StepGraph();

  // Zeroes the static gradients for a new optimizer step.
  void zero_grad();
  // The computation changed (policy auto switched checkpointing off): the next micro-step warms
  // up and captures again.
  void recapture();
  // Forward and backward of micro-batch `b`, one of `k`, accumulating into the gradients; the
  // loss is divided by k and scaled by the precision component. With several processes the
  // `last` micro-batch's graph also holds the gradient communication (bucketed as in eager
  // steps, overlapped with backward; adaptive k's local gradient norm is measured there too,
  // GradSync::measure_local_norm). Returns the micro-batch's mean loss (a device scalar,
  // overwritten by the next call).
  torch::Tensor micro_step(const Batch& b, int64_t k, bool last);
  nlohmann::json report() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace efftrain

// Task: a model, its training and evaluation data, the loss and the quality metric.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "efftrain/core/registry.h"
#include "efftrain/memory/checkpointing.h"

namespace efftrain {

struct Batch {
  torch::Tensor input;   // on the training device
  torch::Tensor target;  // on the training device
  int64_t samples = 0;   // examples (images or sequences) in this micro-batch
  int64_t tokens = 0;    // predicted tokens (language tasks), else 0
};

struct MetricInfo {
  std::string name;        // "top1_accuracy", "perplexity"
  bool higher_is_better;
};

struct EvalResult {
  double value = 0;      // the metric
  double loss = 0;       // mean loss over the evaluation set
  int64_t examples = 0;  // images or tokens evaluated
};

class Task {
 public:
  static constexpr const char* kKind = "task";
  virtual ~Task() = default;

  virtual std::string model_name() const = 0;
  virtual torch::nn::Module& model() = 0;
  // The next training micro-batch of this rank, already on the device.
  virtual Batch next_batch() = 0;
  // Resume: the next next_batch() returns micro-batch number `batches` (0-based), exactly as
  // if the ones before it had been drawn. The default draws and drops them.
  virtual void skip_to(int64_t batches) {
    for (int64_t i = 0; i < batches; ++i) next_batch();
  }
  // Forward pass and mean loss of one micro-batch (called inside the precision scope).
  virtual torch::Tensor loss(const Batch& batch) = 0;
  // The metric over the whole evaluation split (model in eval mode, no grad).
  virtual EvalResult evaluate() = 0;
  virtual MetricInfo metric() const = 0;
  // Model FLOPs of one training example (forward + backward = 3x forward), from the shapes.
  virtual double train_flops_per_sample() const = 0;
  virtual int64_t tokens_per_sample() const { return 0; }
  virtual int64_t train_examples() const = 0;
  // Activation checkpointing: the blocks that can be recomputed, their training-time extra
  // cost (forward FLOPs per example), and the segments to recompute.
  virtual int64_t num_blocks() const { return 0; }
  virtual std::vector<double> block_forward_flops_per_sample() const { return {}; }
  virtual void set_checkpoint_segments(const std::vector<std::pair<int64_t, int64_t>>& segments) {}
  // checkpointing.policy selective: keep less of the cheap activations that take the most memory
  // (GPT: each MLP's GELU output recomputed in backward, the classifier's logits never held
  // whole). False: not offered.
  virtual bool set_selective_recompute(bool on) { return false; }
  // One probe forward (training mode, grad on, a random batch of the real shape, inside
  // `scope`) that measures each block's activation memory on the device allocator; model
  // state (BatchNorm statistics) is restored afterwards. Empty when the task has no blocks.
  virtual std::vector<BlockMemory> probe_block_memory(const std::function<std::shared_ptr<void>()>& scope) {
    return {};
  }
  // What the report says about the model and data beyond name, parameters and FLOPs.
  virtual nlohmann::json describe() const { return nlohmann::json::object(); }
};

using TaskRegistry = Registry<Task>;

int64_t count_parameters(torch::nn::Module& m);

}  // namespace efftrain

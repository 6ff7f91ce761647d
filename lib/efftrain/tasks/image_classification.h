// Image classification: any ImageClassifier on any in-memory ImageSet, top-1 accuracy.
#pragma once

#include "efftrain/data/images.h"
#include "efftrain/data/loader.h"
#include "efftrain/engine/context.h"
#include "efftrain/models/models.h"
#include "efftrain/tasks/task.h"

namespace efftrain {

class ImageClassificationTask : public Task {
 public:
  ImageClassificationTask(const BuildContext& ctx, std::string model_name, data::ImageSet set,
                          std::shared_ptr<models::ImageClassifier> model);

  std::string model_name() const override { return model_name_; }
  torch::nn::Module& model() override { return *model_; }
  Batch next_batch() override;
  void skip_to(int64_t batches) override { loader_->seek(batches); }
  torch::Tensor loss(const Batch& batch) override;
  EvalResult evaluate() override;
  MetricInfo metric() const override { return {"top1_accuracy", true}; }
  double train_flops_per_sample() const override;
  int64_t train_examples() const override { return set_.train.labels.size(0); }
  nlohmann::json describe() const override;
  int64_t num_blocks() const override { return model_->num_blocks(); }
  std::vector<double> block_forward_flops_per_sample() const override {
    return model_->block_forward_flops(image_size_);
  }
  void set_checkpoint_segments(const std::vector<std::pair<int64_t, int64_t>>& s) override {
    model_->set_checkpoint_segments(s);
  }
  std::vector<BlockMemory> probe_block_memory(const std::function<std::shared_ptr<void>()>& scope) override;

 private:
  torch::Tensor prepare(const torch::Tensor& u8_on_device);

  std::string model_name_;
  data::ImageSet set_;
  std::shared_ptr<models::ImageClassifier> model_;
  torch::Device device_;
  std::string input_path_;
  bool augment_;
  bool channels_last_;
  bool fused_bn_relu_;
  std::string bn_kernels_;
  bool conv_grads_in_place_;
  bool recompute_bn_relu_;
  int64_t batch_size_;
  int64_t image_size_;
  data::Normalizer normalize_;
  std::unique_ptr<data::ImageLoader> loader_;
};

}  // namespace efftrain

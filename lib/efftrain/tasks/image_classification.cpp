#include "efftrain/tasks/image_classification.h"

#include <ATen/CPUGeneratorImpl.h>

namespace efftrain {

int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

ImageClassificationTask::ImageClassificationTask(const BuildContext& ctx, std::string model_name,
                                                 data::ImageSet set,
                                                 std::shared_ptr<models::ImageClassifier> model)
    : model_name_(std::move(model_name)),
      set_(std::move(set)),
      model_(std::move(model)),
      device_(ctx.device),
      on_device_(ctx.cfg.task.data.input_path == "device"),
      augment_(ctx.cfg.task.data.augment),
      channels_last_(ctx.cfg.task.model.channels_last),
      batch_size_(ctx.cfg.train.batch_size),
      image_size_(set_.train.images.size(2)),
      sampler_(set_.train.labels.size(0), ctx.cfg.train.batch_size, ctx.cfg.train.seed, ctx.rank,
               ctx.world_size),
      aug_gen_(at::detail::createCPUGenerator(ctx.cfg.train.seed * 1000003ULL + ctx.rank + 17)) {
  model_->to(device_);
  if (channels_last_) {
    torch::NoGradGuard ng;
    for (auto& p : model_->parameters())
      if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
  }
  if (on_device_) {
    set_.train.images = set_.train.images.to(device_);
    set_.train.labels = set_.train.labels.to(device_);
    set_.eval.images = set_.eval.images.to(device_);
    set_.eval.labels = set_.eval.labels.to(device_);
  }
}

torch::Tensor ImageClassificationTask::prepare(const torch::Tensor& u8, bool train) {
  auto x = u8.to(device_, /*non_blocking=*/true);
  x = data::normalize(x, set_.mean, set_.std);
  if (train && augment_) x = data::random_crop_flip(x, /*pad=*/std::max<int64_t>(1, image_size_ / 8), aug_gen_);
  if (channels_last_) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  return x;
}

Batch ImageClassificationTask::next_batch() {
  const auto idx_vec = sampler_.next_batch();
  auto idx = torch::tensor(idx_vec, torch::kLong);
  if (on_device_) idx = idx.to(device_);
  Batch b;
  b.input = prepare(set_.train.images.index_select(0, idx), /*train=*/true);
  b.target = set_.train.labels.index_select(0, idx).to(device_, true);
  b.samples = static_cast<int64_t>(idx_vec.size());
  return b;
}

torch::Tensor ImageClassificationTask::loss(const Batch& batch) {
  return torch::nn::functional::cross_entropy(model_->forward(batch.input), batch.target);
}

EvalResult ImageClassificationTask::evaluate() {
  torch::NoGradGuard no_grad;
  model_->eval();
  const int64_t n = set_.eval.labels.size(0);
  const int64_t chunk = std::max<int64_t>(batch_size_, 256);
  torch::Tensor correct = torch::zeros({}, torch::TensorOptions().device(device_).dtype(torch::kLong));
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device_).dtype(torch::kDouble));
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t e = std::min(n, s + chunk);
    auto x = prepare(set_.eval.images.slice(0, s, e), /*train=*/false);
    auto y = set_.eval.labels.slice(0, s, e).to(device_, true);
    auto logits = model_->forward(x).to(torch::kFloat);
    correct += (logits.argmax(1) == y).sum();
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .to(torch::kDouble);
  }
  model_->train();
  EvalResult r;
  r.examples = n;
  r.value = static_cast<double>(correct.item<int64_t>()) / static_cast<double>(n);
  r.loss = loss_sum.item<double>() / static_cast<double>(n);
  return r;
}

double ImageClassificationTask::train_flops_per_sample() const {
  return 3.0 * model_->forward_flops(image_size_);
}

nlohmann::json ImageClassificationTask::describe() const {
  return {{"image_size", image_size_},
          {"classes", set_.classes},
          {"train_examples", set_.train.labels.size(0)},
          {"eval_examples", set_.eval.labels.size(0)},
          {"input_path", on_device_ ? "device" : "host"},
          {"augment", augment_},
          {"channels_last", channels_last_}};
}

namespace {
std::unique_ptr<Task> make_synthetic_cnn(const BuildContext& ctx) {
  const auto& t = ctx.cfg.task;
  auto set = data::make_synthetic_images(t.data);
  torch::manual_seed(ctx.cfg.train.seed);
  auto model = std::make_shared<models::SmallCnnImpl>(t.data.channels, t.model.width, t.model.depth,
                                                      t.data.classes);
  return std::make_unique<ImageClassificationTask>(ctx, "small_cnn", std::move(set), model);
}
}  // namespace

EFFTRAIN_REGISTER(Task, "synthetic_cnn",
                  "small CNN (task.model.width/depth) on the deterministic synthetic image set",
                  make_synthetic_cnn);

}  // namespace efftrain

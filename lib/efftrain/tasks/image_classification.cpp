#include "efftrain/tasks/image_classification.h"

#include "efftrain/core/error.h"
#include "efftrain/data/cifar10.h"
#include "efftrain/memory/probe.h"

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
      input_path_(ctx.cfg.task.data.input_path),
      augment_(ctx.cfg.task.data.augment),
      channels_last_(ctx.cfg.task.model.channels_last),
      fused_bn_relu_(ctx.cfg.task.model.fused_bn_relu),
      bn_kernels_(ctx.cfg.task.model.bn_kernels),
      conv_grads_in_place_(ctx.cfg.task.model.conv_grads_in_place),
      recompute_bn_relu_(ctx.cfg.task.model.recompute_bn_relu),
      batch_size_(ctx.cfg.train.batch_size),
      image_size_(set_.train.images.size(2)),
      normalize_(set_.mean, set_.std, device_) {
  model_->to(device_);
  if (channels_last_) {
    torch::NoGradGuard ng;
    for (auto& p : model_->parameters())
      if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
  }
  const auto& d = ctx.cfg.task.data;
  data::LoaderOptions lo;
  lo.batch_size = ctx.cfg.train.batch_size;
  lo.seed = ctx.cfg.train.seed;
  lo.rank = ctx.rank;
  lo.world_size = ctx.world_size;
  lo.augment = augment_;
  lo.pad = image_size_ >= 32 ? 4 : std::max<int64_t>(1, image_size_ / 8);
  lo.workers = d.workers;
  lo.prefetch = d.prefetch;
  lo.pin_memory = d.pin_memory;
  loader_ = data::make_image_loader(input_path_, set_.train, lo, device_);
  if (d.eval_limit > 0 && d.eval_limit < set_.eval.labels.size(0)) {
    set_.eval.images = set_.eval.images.slice(0, 0, d.eval_limit);
    set_.eval.labels = set_.eval.labels.slice(0, 0, d.eval_limit);
  }
  set_.eval.images = set_.eval.images.to(device_);
  set_.eval.labels = set_.eval.labels.to(device_);
}

torch::Tensor ImageClassificationTask::prepare(const torch::Tensor& u8) {
  auto x = normalize_(u8);
  if (channels_last_) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  return x;
}

Batch ImageClassificationTask::next_batch() {
  auto b = loader_->next();
  Batch out;
  out.input = prepare(b.images);
  out.target = b.labels;
  out.samples = b.images.size(0);
  return out;
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
    auto x = prepare(set_.eval.images.slice(0, s, e));
    auto y = set_.eval.labels.slice(0, s, e);
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

std::vector<BlockMemory> ImageClassificationTask::probe_block_memory(
    const std::function<std::shared_ptr<void>()>& scope) {
  if (model_->num_blocks() == 0) return {};
  std::vector<torch::Tensor> saved;
  {
    torch::NoGradGuard ng;
    for (auto& b : model_->buffers()) saved.push_back(b.clone());
  }
  const auto s = set_.train.images.sizes();
  auto x = prepare(torch::randint(0, 256, {batch_size_, s[1], s[2], s[3]},
                                  torch::TensorOptions().device(device_).dtype(torch::kUInt8)));
  auto blocks = measure_block_memory(
      device_, [&](BlockObserver o) { model_->block_observer = std::move(o); },
      [&] {
        auto guard = scope();
        auto y = model_->forward(x);  // the graph (and its activations) lives until here
      });
  torch::NoGradGuard ng;
  auto bufs = model_->buffers();
  for (size_t i = 0; i < bufs.size(); ++i) bufs[i].copy_(saved[i]);
  return blocks;
}

double ImageClassificationTask::train_flops_per_sample() const {
  return 3.0 * model_->forward_flops(image_size_);
}

nlohmann::json ImageClassificationTask::describe() const {
  nlohmann::json d = {{"image_size", image_size_},
          {"classes", set_.classes},
          {"train_examples", set_.train.labels.size(0)},
          {"eval_examples", set_.eval.labels.size(0)},
          {"input_path", input_path_},
          {"augment", augment_},
          {"channels_last", channels_last_}};
  if (auto k = model_->bn_kernel(); !k.empty()) {
    d["fused_bn_relu"] = fused_bn_relu_;
    d["bn_kernels"] = bn_kernels_;
    d["bn_kernel"] = k;
  }
  if (auto g = model_->conv_grads(); !g.empty()) {
    d["conv_grads_in_place"] = conv_grads_in_place_;
    d["conv_grads"] = g;
  }
  if (auto n = model_->bn_relu_remade(); n >= 0) {
    d["recompute_bn_relu"] = recompute_bn_relu_;
    d["bn_relu_remade"] = n;
  }
  return d;
}

namespace {
std::unique_ptr<Task> make_resnet(const BuildContext& ctx, int64_t width, std::vector<int64_t> blocks,
                                  const std::string& name) {
  const auto& t = ctx.cfg.task;
  data::ImageSet set;
  if (t.data.synthetic) {
    config::DataConfig shape = t.data;
    shape.image_size = 32;
    shape.channels = 3;
    shape.classes = 10;
    set = data::make_synthetic_images(shape);
    set.mean = data::kCifarMean;
    set.std = data::kCifarStd;
  } else {
    set = data::load_cifar10(t.data.root);
  }
  if (t.model.norm != "batch")
    throw UserError("task.model.norm: " + t.model.norm + " is for the small CNN (synthetic_cnn); ResNet uses batch");
  torch::manual_seed(ctx.cfg.train.seed);
  auto model = std::make_shared<models::ResNetImpl>(3, width, std::move(blocks), 10, t.model.zero_init_residual);
  model->set_bn_kernels(!t.model.fused_bn_relu          ? kernels::BnKernels::aten
                         : t.model.bn_kernels == "efftrain" ? kernels::BnKernels::efftrain
                                                            : kernels::BnKernels::cudnn);
  model->set_conv_grads_in_place(t.model.conv_grads_in_place);
  model->set_recompute_bn_relu(t.model.recompute_bn_relu);
  return std::make_unique<ImageClassificationTask>(ctx, name, std::move(set), model);
}

std::unique_ptr<Task> make_synthetic_cnn(const BuildContext& ctx) {
  const auto& t = ctx.cfg.task;
  auto set = data::make_synthetic_images(t.data);
  torch::manual_seed(ctx.cfg.train.seed);
  auto model = std::make_shared<models::SmallCnnImpl>(t.data.channels, t.model.width, t.model.depth,
                                                      t.data.classes, t.model.norm == "batch");
  return std::make_unique<ImageClassificationTask>(ctx, "small_cnn", std::move(set), model);
}
}  // namespace

EFFTRAIN_REGISTER(Task, "synthetic_cnn",
                  "small CNN (task.model.width/depth) on the deterministic synthetic image set",
                  make_synthetic_cnn);


EFFTRAIN_REGISTER(Task, "cifar10_resnet50",
                  "ResNet-50 v1.5 (CIFAR stem, 23,520,842 parameters) on CIFAR-10 at task.data.root, top-1 accuracy",
                  [](const BuildContext& ctx) { return make_resnet(ctx, 64, {3, 4, 6, 3}, "resnet50"); });
EFFTRAIN_REGISTER(Task, "cifar10_resnet",
                  "ResNet with bottlenecks of task.model.width and task.model.blocks on CIFAR-10 (small test variants)",
                  [](const BuildContext& ctx) {
                    return make_resnet(ctx, ctx.cfg.task.model.width, ctx.cfg.task.model.blocks, "resnet");
                  });

}  // namespace efftrain

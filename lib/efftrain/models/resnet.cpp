#include "efftrain/models/models.h"

#include "efftrain/kernels/bn_relu.h"
#include "efftrain/kernels/conv.h"
#include "efftrain/kernels/param_casts.h"
#include "efftrain/memory/checkpoint.h"

namespace efftrain::models {

namespace {
torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride) {
  auto c = torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
  torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
  return c;
}
torch::nn::BatchNorm2d bn(int64_t ch) {
  auto b = torch::nn::BatchNorm2d(ch);  // weight 1, bias 0, eps 1e-5, momentum 0.1
  return b;
}
constexpr int64_t kExpansion = 4;

// c(x); with `own_weight_grad`, through kernels::conv2d (the weight's cast and gradient routed by
// the convolution itself; `src`: what x can be remade from, kernels::BnReluSource).
torch::Tensor run_conv(torch::nn::Conv2d& c, const torch::Tensor& x, bool own_weight_grad,
                       const kernels::BnReluSource& src = {}) {
  if (!own_weight_grad) return c->forward(x);
  const auto& pad = std::get<torch::ExpandingArray<2>>(c->options.padding());
  return kernels::conv2d(x, c->weight, c->options.stride()->at(0), pad->at(0), src);
}
}  // namespace

namespace {
// The running statistics a training forward of `bn` updates: none while a checkpointed segment is
// recomputed (memory checkpoint.h, recomputing()): the forward already updated them.
std::pair<torch::Tensor, torch::Tensor> updated_statistics(const torch::nn::BatchNorm2d& bn) {
  TORCH_CHECK(bn->options.momentum().has_value(),
              "models::batch_norm: a cumulative average (momentum none) needs the count per forward");
  if (recomputing()) return {};
  return {bn->running_mean, bn->running_var};
}
}  // namespace

torch::Tensor batch_norm(torch::nn::BatchNorm2d& bn, const torch::Tensor& x, kernels::BnKernels k) {
  const auto& o = bn->options;
  if (!bn->is_training() || !o.track_running_stats()) return bn->forward(x);
  const auto [mean, var] = updated_statistics(bn);
  if (k != kernels::BnKernels::aten) return kernels::bn(x, bn->weight, bn->bias, mean, var, *o.momentum(), o.eps(), k);
  return torch::nn::functional::detail::batch_norm(x, mean, var, bn->weight, bn->bias, /*training=*/true,
                                                   *o.momentum(), o.eps());
}

torch::Tensor batch_norm_relu(torch::nn::BatchNorm2d& bn, const torch::Tensor& x, const torch::Tensor& z,
                              kernels::BnKernels k) {
  const auto& o = bn->options;
  if (!bn->is_training() || !o.track_running_stats()) {
    auto y = bn->forward(x);
    return torch::relu(z.defined() ? y + z : y);
  }
  // aten, or where the fused kernels do not apply: the ATen ops batch_norm runs, then the add and ReLU.
  const auto [mean, var] = updated_statistics(bn);
  return kernels::bn_add_relu(x, z, bn->weight, bn->bias, mean, var, *o.momentum(), o.eps(), k);
}

namespace {
// batch_norm_relu without the add, and with `remakable` what its output can be remade from where
// the project's kernels ran it in training (kernels::bn_relu_remakable); else no source.
std::pair<torch::Tensor, kernels::BnReluSource> batch_norm_relu_source(torch::nn::BatchNorm2d& bn,
                                                                       const torch::Tensor& x, kernels::BnKernels k,
                                                                       bool remakable) {
  const auto& o = bn->options;
  if (!remakable || !bn->is_training() || !o.track_running_stats()) return {batch_norm_relu(bn, x, {}, k), {}};
  const auto [mean, var] = updated_statistics(bn);
  return kernels::bn_relu_remakable(x, bn->weight, bn->bias, mean, var, *o.momentum(), o.eps(), k);
}
}  // namespace

void count_batch_norm_forwards(const std::vector<torch::nn::BatchNorm2d>& bns) {
  std::vector<torch::Tensor> counters;
  for (const auto& b : bns)
    if (b->is_training() && b->options.track_running_stats() && b->num_batches_tracked.defined())
      counters.push_back(b->num_batches_tracked);
  torch::NoGradGuard ng;
  if (!counters.empty()) torch::_foreach_add_(counters, 1);
}

BottleneckImpl::BottleneckImpl(int64_t in, int64_t planes, int64_t stride)
    : in_(in), planes_(planes), stride_(stride) {
  conv1_ = register_module("conv1", conv(in, planes, 1, 1));
  bn1_ = register_module("bn1", bn(planes));
  conv2_ = register_module("conv2", conv(planes, planes, 3, stride));
  bn2_ = register_module("bn2", bn(planes));
  conv3_ = register_module("conv3", conv(planes, planes * kExpansion, 1, 1));
  bn3_ = register_module("bn3", bn(planes * kExpansion));
  if (stride != 1 || in != planes * kExpansion) {
    down_conv_ = register_module("downsample_conv", conv(in, planes * kExpansion, 1, stride));
    down_bn_ = register_module("downsample_bn", bn(planes * kExpansion));
  }
}

torch::Tensor BottleneckImpl::forward(torch::Tensor x, const kernels::BnReluSource& src) {
  const auto f = bn_kernels_;
  const bool c = conv_grads_in_place_;
  // With c (where it routes): the 1x1 convolutions as matrix products; conv1 passes x on to the
  // shortcut, whose gradient its backward adds into (kernels::conv1x1). c1: conv1's output and
  // the shortcut's input.
  // With recompute_bn_relu_ (and c): conv2 and conv3 keep their input's source, not the input, and
  // so do conv1 and the shortcut's convolution where x came with one (`src`).
  // Without gradients (a checkpointed segment's forward) nothing is kept for a backward.
  const bool r = recompute_bn_relu_ && c && torch::GradMode::is_enabled();
  const auto src0 = r ? src : kernels::BnReluSource{};
  const bool products = c && kernels::routes_weight(x, conv1_->weight);
  const auto c1 = products ? kernels::conv1x1(x, conv1_->weight, /*pass_input=*/true, src0)
                           : std::vector<torch::Tensor>{run_conv(conv1_, x, c, src0), x};
  auto identity = down_conv_ ? batch_norm(down_bn_, run_conv(down_conv_, c1[1], c, src0), f) : c1[1];
  auto [y1, src1] = batch_norm_relu_source(bn1_, c1[0], f, r);
  auto [y2, src2] = batch_norm_relu_source(bn2_, run_conv(conv2_, y1, c, src1), f, r);
  remade_ = int64_t{kernels::keeps_source(x, conv1_->weight, src0)} + kernels::keeps_source(y1, conv2_->weight, src1) +
            kernels::keeps_source(y2, conv3_->weight, src2);
  auto out = products ? kernels::conv1x1(y2, conv3_->weight, false, src2)[0] : run_conv(conv3_, y2, c, src2);
  return batch_norm_relu(bn3_, out, identity, f);
}

void BottleneckImpl::batch_norms(std::vector<torch::nn::BatchNorm2d>& out) const {
  for (const auto* b : {&bn1_, &bn2_, &bn3_, &down_bn_})
    if (!b->is_empty()) out.push_back(*b);
}

double BottleneckImpl::forward_flops(int64_t s) const {
  const int64_t o = out_size(s);
  double f = conv_flops(in_, planes_, 1, s, s) + conv_flops(planes_, planes_, 3, o, o) +
             conv_flops(planes_, planes_ * kExpansion, 1, o, o);
  if (down_conv_) f += conv_flops(in_, planes_ * kExpansion, 1, o, o);
  return f;
}

void BottleneckImpl::zero_init_last_bn() {
  torch::NoGradGuard ng;
  bn3_->weight.zero_();
}

ResNetImpl::ResNetImpl(int64_t in_channels, int64_t width, std::vector<int64_t> blocks, int64_t classes,
                       bool zero_init_residual)
    : in_channels_(in_channels), width_(width), classes_(classes) {
  conv1_ = register_module("conv1", conv(in_channels, width, 3, 1));
  bn1_ = register_module("bn1", bn(width));
  int64_t in = width;
  for (size_t stage = 0; stage < blocks.size(); ++stage) {
    const int64_t planes = width << stage;
    for (int64_t b = 0; b < blocks[stage]; ++b) {
      const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      auto block = Bottleneck(in, planes, stride);
      if (zero_init_residual) block->zero_init_last_bn();
      blocks_.push_back(register_module("layer" + std::to_string(stage + 1) + "_" + std::to_string(b), block));
      in = planes * kExpansion;
    }
  }
  final_channels_ = in;
  fc_ = register_module("fc", torch::nn::Linear(in, classes));
  batch_norms_.push_back(bn1_);
  for (const auto& b : blocks_) b->batch_norms(batch_norms_);
}

torch::Tensor ResNetImpl::stem(torch::Tensor x) {
  if (is_training())
    conv_grads_ = conv_grads_in_place_ && kernels::routes_weight(x, conv1_->weight) ? "in_place" : "autograd";
  auto h = run_conv(conv1_, x, conv_grads_in_place_);
  auto [y, src] = batch_norm_relu_source(bn1_, h, bn_kernels_, recompute_bn_relu_ && conv_grads_in_place_);
  stem_src_ = std::move(src);
  if (is_training()) bn_kernel_ = kernels::bn_kernel_name(bn_kernels_, h, {});
  return y;
}

void ResNetImpl::set_bn_kernels(kernels::BnKernels k) {
  bn_kernels_ = k;
  for (auto& b : blocks_) b->bn_kernels_ = k;
}

void ResNetImpl::set_conv_grads_in_place(bool on) {
  conv_grads_in_place_ = on;
  for (auto& b : blocks_) b->conv_grads_in_place_ = on;
}

void ResNetImpl::set_recompute_bn_relu(bool on) {
  recompute_bn_relu_ = on;
  for (auto& b : blocks_) b->recompute_bn_relu_ = on;
}

torch::Tensor ResNetImpl::head(torch::Tensor x) {
  return fc_->forward(torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1));
}

void ResNetImpl::refresh_casts(const torch::Tensor& x) {
  kernels::refresh_casts(casts_, x, conv_grads_in_place_, [&] {
    std::vector<torch::Tensor> ws;
    for (const auto& p : parameters())
      if (p.dim() == 4) ws.push_back(p);  // the convolutions' weights
    return ws;
  });
}

torch::Tensor ResNetImpl::forward(torch::Tensor x) {
  // What each BatchNorm2d's own forward would have done (models::batch_norm).
  if (is_training()) count_batch_norm_forwards(batch_norms_);
  refresh_casts(x);
  x = stem(x);
  if (block_observer) block_observer(-1, x);
  x = run_blocks(
      num_blocks(), segments_, is_training(),
      [this](int64_t i, const torch::Tensor& h) {
        // The stem's source goes to the first block once (a checkpointed recompute gets none).
        return blocks_[i]->forward(h, i == 0 ? std::exchange(stem_src_, {}) : kernels::BnReluSource{});
      },
      block_observer, x);
  stem_src_ = {};  // no blocks: nothing holds the stem's output past the forward
  if (is_training()) {
    remade_ = 0;
    for (const auto& b : blocks_) remade_ += b->remade_;
  }
  return head(x);
}

std::vector<double> ResNetImpl::block_forward_flops(int64_t s) const {
  s = (s + 2 - 3) / 1 + 1;  // the stem keeps the size
  std::vector<double> out;
  for (const auto& b : blocks_) {
    out.push_back(b->forward_flops(s));
    s = b->out_size(s);
  }
  return out;
}

double ResNetImpl::forward_flops(int64_t s) const {
  double f = conv_flops(in_channels_, width_, 3, s, s);
  for (const auto& b : blocks_) {
    f += b->forward_flops(s);
    s = b->out_size(s);
  }
  return f + linear_flops(final_channels_, classes_);
}

}  // namespace efftrain::models

// Image models. Each reports its forward FLOPs per example from its own layer shapes.
#pragma once

#include <torch/torch.h>

#include "efftrain/kernels/bn_relu.h"

namespace efftrain::kernels {
class ParamCasts;
}

namespace efftrain::models {

// Multiply-adds x2 of a convolution producing an out_h x out_w map.
double conv_flops(int64_t in_ch, int64_t out_ch, int64_t kernel, int64_t out_h, int64_t out_w);
double linear_flops(int64_t in, int64_t out);

class ImageClassifier : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // Forward FLOPs of one example of size channels x size x size.
  virtual double forward_flops(int64_t image_size) const = 0;
  // Blocks that activation checkpointing can recompute (0 = none), and their forward FLOPs.
  virtual int64_t num_blocks() const { return 0; }
  virtual std::vector<double> block_forward_flops(int64_t image_size) const { return {}; }
  // Recompute runs of blocks [first, first + count) in backward.
  void set_checkpoint_segments(std::vector<std::pair<int64_t, int64_t>> segments) { segments_ = std::move(segments); }
  // Called with (-1, stem output) and then (i, output of block i) during forward (probes).
  std::function<void(int64_t, const torch::Tensor&)> block_observer;
  // What ran each BatchNorm + ReLU in the last training forward, where the model says
  // ("efftrain_fused", "cudnn_fused" or "aten"); empty otherwise.
  virtual std::string bn_kernel() const { return {}; }
  // Who routed the convolutions' weight gradients in the last training forward, where the model
  // says ("in_place" or "autograd"); empty otherwise.
  virtual std::string conv_grads() const { return {}; }
  // ResNet with task.model.recompute_bn_relu: BatchNorm + ReLU outputs remade per step (-1: none yet).
  virtual int64_t bn_relu_remade() const { return -1; }

 protected:
  std::vector<std::pair<int64_t, int64_t>> segments_;
};

// A small CNN for tests and the quickstart: `depth` stages of conv3x3-BN-ReLU (stride 2 after
// the first), channels width, 2*width, ..., then global average pooling and a linear head.
class SmallCnnImpl : public ImageClassifier {
 public:
  // batch_norm = false: conv3x3 (with bias)-ReLU, no normalization.
  SmallCnnImpl(int64_t in_channels, int64_t width, int64_t depth, int64_t classes, bool batch_norm = true);
  torch::Tensor forward(torch::Tensor x) override;
  double forward_flops(int64_t image_size) const override;

 private:
  struct Stage {
    torch::nn::Conv2d conv{nullptr};
    torch::nn::BatchNorm2d bn{nullptr};
    int64_t in, out, stride;
  };
  std::vector<Stage> stages_;
  torch::nn::Linear head_{nullptr};
  int64_t classes_;
};

}  // namespace efftrain::models

namespace efftrain::models {

// BatchNorm2d's forward, less its num_batches_tracked increment (the ResNet counts its
// BatchNorms' forwards in one operation: count_batch_norm_forwards), and with batch statistics
// only while a checkpointed segment is recomputed (memory checkpoint.h, recomputing()): the
// forward already updated the running statistics. Outside training it is bn->forward(x).
// In a graph-replayed ResNet-50 micro-step with sqrt checkpointing this is ~400 fewer nodes:
// the counter increments and the save/restore of every recomputed BatchNorm's statistics.
// In training with `k` other than aten: those BatchNorm kernels where they apply (kernels::bn).
torch::Tensor batch_norm(torch::nn::BatchNorm2d& bn, const torch::Tensor& x,
                         kernels::BnKernels k = kernels::BnKernels::aten);
// relu(batch_norm(bn, x) + z) (z undefined: no add). In training with `k` other than aten: `k`'s
// fused kernels where they apply (kernels/bn_relu.h), the running statistics left alone while
// recomputing, as batch_norm does; otherwise batch_norm, the add and ReLU.
torch::Tensor batch_norm_relu(torch::nn::BatchNorm2d& bn, const torch::Tensor& x, const torch::Tensor& z,
                              kernels::BnKernels k);
// Adds 1 to every num_batches_tracked of `bns` that counts, in one operation.
void count_batch_norm_forwards(const std::vector<torch::nn::BatchNorm2d>& bns);

// ResNet v1.5 with bottleneck blocks (stride on the 3x3 conv), torchvision's initialization,
// and the CIFAR stem (3x3 conv stride 1, no max-pool). ResNet-50: width 64, blocks {3,4,6,3}.
// blocks() exposes the bottlenecks in order, so checkpointing can wrap runs of them.
class BottleneckImpl : public torch::nn::Module {
 public:
  BottleneckImpl(int64_t in, int64_t planes, int64_t stride);
  // `src`: what x can be remade from (the stem's output with recompute_bn_relu_), for conv1 and the
  // shortcut's convolution.
  torch::Tensor forward(torch::Tensor x, const kernels::BnReluSource& src = {});
  double forward_flops(int64_t in_size) const;  // in_size: input height = width
  int64_t out_size(int64_t in_size) const { return (in_size - 1) / stride_ + 1; }
  void zero_init_last_bn();
  // Its BatchNorms, appended to `out`.
  void batch_norms(std::vector<torch::nn::BatchNorm2d>& out) const;
  kernels::BnKernels bn_kernels_ = kernels::BnKernels::aten;  // set through ResNetImpl::set_bn_kernels
  bool conv_grads_in_place_ = false;  // set through ResNetImpl::set_conv_grads_in_place
  bool recompute_bn_relu_ = false;    // set through ResNetImpl::set_recompute_bn_relu
  int64_t remade_ = 0;                // BatchNorm + ReLU outputs its last forward left to be remade

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr}, down_conv_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr}, down_bn_{nullptr};
  int64_t in_, planes_, stride_;
};
TORCH_MODULE(Bottleneck);

class ResNetImpl : public ImageClassifier {
 public:
  ResNetImpl(int64_t in_channels, int64_t width, std::vector<int64_t> blocks, int64_t classes,
             bool zero_init_residual);
  torch::Tensor forward(torch::Tensor x) override;
  double forward_flops(int64_t image_size) const override;
  int64_t num_blocks() const override { return static_cast<int64_t>(blocks_.size()); }
  std::vector<double> block_forward_flops(int64_t image_size) const override;
  // The stem, each bottleneck in order, and the head, as separate steps of forward() (which also
  // counts the BatchNorms' forwards in training: count_batch_norm_forwards).
  torch::Tensor stem(torch::Tensor x);
  std::vector<Bottleneck>& blocks() { return blocks_; }
  torch::Tensor head(torch::Tensor x);
  // task.model.fused_bn_relu (and bn_kernels): every BatchNorm + ReLU (+ residual add) through
  // batch_norm_relu's fused path with `k`'s kernels; set_fused_bn_relu(on): cuDNN's or none.
  // bn_kernel(): what ran the stem's in the last training forward ("efftrain_fused",
  // "cudnn_fused" or "aten"; empty before one); the blocks take the same path where their
  // channels allow (kernels/bn_relu.h).
  void set_bn_kernels(kernels::BnKernels k);
  void set_fused_bn_relu(bool on) { set_bn_kernels(on ? kernels::BnKernels::cudnn : kernels::BnKernels::aten); }
  std::string bn_kernel() const override { return bn_kernel_; }
  // task.model.conv_grads_in_place: every convolution through kernels::conv2d / conv1x1 (kernels/
  // conv.h), the weights cast by one ParamCasts kernel per forward. conv_grads(): what routed the
  // stem's weight gradient in the last training forward ("in_place" or "autograd"; empty before one).
  void set_conv_grads_in_place(bool on);
  std::string conv_grads() const override { return conv_grads_; }
  // task.model.recompute_bn_relu: the convolutions after a BatchNorm + ReLU without the add (each
  // bottleneck's 3x3 and last 1x1, and the first bottleneck's conv1 and shortcut after the stem)
  // keep its source instead of its output (kernels::BnReluSource), where the project's BatchNorm
  // kernels and own-weight convolutions run. bn_relu_remade(): how many outputs the last training
  // forward left to be remade in backward, outside checkpointed segments (-1 before one).
  void set_recompute_bn_relu(bool on);
  int64_t bn_relu_remade() const override { return remade_; }

 private:
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::vector<Bottleneck> blocks_;
  std::vector<torch::nn::BatchNorm2d> batch_norms_;  // the stem's and every block's, for their counters
  kernels::BnKernels bn_kernels_ = kernels::BnKernels::aten;
  bool conv_grads_in_place_ = false;
  std::string bn_kernel_, conv_grads_;
  int64_t remade_ = -1;
  bool recompute_bn_relu_ = false;
  kernels::BnReluSource stem_src_;  // the stem's output's, from stem() until the first block takes it
  // With conv_grads_in_place, every convolution's weight cast by one kernel per forward.
  void refresh_casts(const torch::Tensor& x);
  std::shared_ptr<kernels::ParamCasts> casts_;
  torch::nn::Linear fc_{nullptr};
  int64_t in_channels_, width_, classes_, final_channels_;
};

}  // namespace efftrain::models

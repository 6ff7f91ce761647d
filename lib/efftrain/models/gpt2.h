// GPT-2: learned positions, pre-LayerNorm blocks (eps 1e-5), GELU (tanh), tied input/output
// embeddings, GPT-2 initialization; attention either materialized (plain) or through
// scaled_dot_product_attention. GPT-2 small: 12 layers, 12 heads, 768 wide, context 1024,
// vocabulary 50257: 124,439,808 parameters. With vocab_multiple > 1 the embedding/classifier
// table gets zero rows up to a multiple of it (aligned matrix products: at 50257 cuBLAS falls
// back to slow kernels); the classifier adds a bias of -inf on those columns, so the softmax,
// the loss and every gradient are the unpadded model's, and the extra rows stay zero.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "efftrain/kernels/matmul.h"

namespace efftrain::kernels {
class ParamCasts;
}

namespace efftrain::models {

struct GptConfig {
  int64_t vocab = 50257;
  int64_t context = 1024;
  int64_t layers = 12;
  int64_t heads = 12;
  int64_t width = 768;
  double dropout = 0.1;
  bool sdpa = true;
  int64_t vocab_multiple = 1;
  // loss() while gradients are taken: the chunked classifier below, with the fused kernels on the
  // logits' own dtype (kernels::cross_entropy_rows_to_grad); otherwise kernels::cross_entropy_mean.
  bool fused_loss = false;
  // Residual add + dropout + LayerNorm through kernels::residual_layer_norm: each block's
  // attention output joins the stream with ln_2, its MLP output with the next block's ln_1 (or
  // ln_f) -- within blocks only while segments are recomputed or a probe watches the blocks.
  bool fused_norm = false;
  // The MLP through kernels::mlp: c_fc's bias and GELU in cuBLASLt's matmul epilogue.
  bool fused_gelu = false;
  // Whose matrix products the linear layers and the classifier run (kernels/matmul.h).
  kernels::Matmul matmul = kernels::Matmul::aten;
  // Selective recompute (checkpointing.policy selective): the MLP keeps its GELU input only and
  // recomputes the output in backward.
  bool selective_recompute = false;
  // With selective recompute or fused_loss, loss() computes the logits `head_chunk_rows` rows at a
  // time and their gradients with them, in forward, never holding all of them. 0: 2048 under
  // selective recompute (2048 x 50304 bf16 logits: 0.2 GB), else 16384 (fewer, larger matmuls:
  // GPT-2 small b32 on an H200, 1.6 GB of logits, 0.6% faster than 8192 and 14.81 GiB peak).
  int64_t head_chunk_rows = 0;
  int64_t padded_vocab() const { return (vocab + vocab_multiple - 1) / vocab_multiple * vocab_multiple; }
};

class GptBlockImpl : public torch::nn::Module {
 public:
  GptBlockImpl(const GptConfig& c);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::Tensor attention(const torch::Tensor& x);  // the output projection, before its dropout
  torch::Tensor mlp(const torch::Tensor& x);        // likewise
  // {s + dropout(h), ln(s + dropout(h))}
  std::pair<torch::Tensor, torch::Tensor> add_norm(const torch::Tensor& s, const torch::Tensor& h,
                                                   const torch::nn::LayerNorm& ln);
  friend class GptImpl;
  GptConfig c_;
  torch::nn::LayerNorm ln1_{nullptr}, ln2_{nullptr};
  torch::nn::Linear c_attn_{nullptr}, attn_proj_{nullptr}, c_fc_{nullptr}, mlp_proj_{nullptr};
};
TORCH_MODULE(GptBlock);

class GptImpl : public torch::nn::Module {
 public:
  explicit GptImpl(const GptConfig& c);
  // idx: int64 [B, T] -> logits [B, T, padded vocab] (-inf on the padding)
  torch::Tensor forward(const torch::Tensor& idx);
  // Mean token cross-entropy of next-token prediction (fused_loss: without an fp32 copy of the
  // logits; in training through the chunked classifier, its gradients taken in forward).
  torch::Tensor loss(const torch::Tensor& idx, const torch::Tensor& targets);
  int64_t num_blocks() const { return c_.layers; }
  void set_checkpoint_segments(std::vector<std::pair<int64_t, int64_t>> s) { segments_ = std::move(s); }
  void set_selective_recompute(bool on);
  const GptConfig& config() const { return c_; }
  // Training FLOPs per token: 6 x (parameters that do matmuls: all but the position table)
  // + the attention term 12 x layers x T x width; and the forward FLOPs of one block per token.
  double train_flops_per_token(int64_t seq_len) const;
  double block_forward_flops_per_token(int64_t seq_len) const;
  // Which SDPA kernel the last forward used ("flash_attention", "cudnn_attention", ...).
  const std::string& attention_kernel() const { return kernel_; }
  // "fused_kernel" or "aten" once loss() ran.
  const std::string& loss_kernel() const { return loss_kernel_; }
  // Classifier rows per chunk in loss() (GptConfig::head_chunk_rows, 0 resolved).
  int64_t head_chunk_rows() const;
  // What ran the residual + LayerNorm steps in the last forward ("aten", "fused_kernel", ...).
  const std::string& norm_kernel() const { return norm_kernel_; }
  // What ran the MLP's bias + GELU in the last forward ("cublaslt_epilogue" or "aten").
  const std::string& gelu_kernel() const { return gelu_kernel_; }
  // Called with (-1, embedding output) and then (i, output of block i) during forward (probes).
  std::function<void(int64_t, const torch::Tensor&)> block_observer;
  std::string kernel_;
  std::string loss_kernel_;
  std::string norm_kernel_;
  std::string gelu_kernel_;

 private:
  torch::Tensor features(const torch::Tensor& idx);  // embeddings, blocks, final LayerNorm
  const torch::Tensor& pad_mask_on(const torch::Device& d);  // pad_mask_, moved to d once
  GptConfig c_;
  torch::nn::Embedding wte_{nullptr}, wpe_{nullptr};
  std::vector<GptBlock> blocks_;
  torch::nn::LayerNorm ln_f_{nullptr};
  std::vector<std::pair<int64_t, int64_t>> segments_;
  torch::Tensor pad_mask_;  // [padded vocab]: 0, then -inf on the padding (undefined without)
  // fp16/bf16 copies of the linear layers' parameters, wte and the mask, refreshed by one kernel
  // at the start of each training forward under autocast (kernels/param_casts.h)
  void refresh_casts(const torch::Tensor& x);
  std::shared_ptr<kernels::ParamCasts> casts_;
};
TORCH_MODULE(Gpt);

// Restricts scaled_dot_product_attention to one backend ("cudnn", "flash", "efficient", "math")
// for the rest of the process, as PyTorch's sdpa_kernel context does; "auto" enables those four
// again (PyTorch's default: it picks among them).
void use_sdpa_backend(const std::string& name);

}  // namespace efftrain::models

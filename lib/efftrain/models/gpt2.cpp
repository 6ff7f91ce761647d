#include "efftrain/models/gpt2.h"

#include <ATen/autocast_mode.h>

#include <cmath>
#include <limits>

#include "efftrain/memory/checkpoint.h"

namespace efftrain::models {

namespace {
torch::nn::Linear linear(int64_t in, int64_t out, double std) {
  auto l = torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(true));
  torch::NoGradGuard ng;
  l->weight.normal_(0.0, std);
  l->bias.zero_();
  return l;
}
torch::nn::LayerNorm layer_norm(int64_t w) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({w}).eps(1e-5));
}
const char* kernel_name(int64_t backend) {
  switch (backend) {
    case 0: return "math";
    case 1: return "flash_attention";
    case 2: return "efficient_attention";
    case 3: return "cudnn_attention";
    case 4: return "overrideable";
    default: return "error";
  }
}
}  // namespace

GptBlockImpl::GptBlockImpl(const GptConfig& c) : c_(c) {
  const double resid_std = 0.02 / std::sqrt(2.0 * c.layers);
  ln1_ = register_module("ln_1", layer_norm(c.width));
  c_attn_ = register_module("attn_c_attn", linear(c.width, 3 * c.width, 0.02));
  attn_proj_ = register_module("attn_c_proj", linear(c.width, c.width, resid_std));
  ln2_ = register_module("ln_2", layer_norm(c.width));
  c_fc_ = register_module("mlp_c_fc", linear(c.width, 4 * c.width, 0.02));
  mlp_proj_ = register_module("mlp_c_proj", linear(4 * c.width, c.width, resid_std));
}

torch::Tensor GptBlockImpl::attention(const torch::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), C = c_.width, H = c_.heads, D = C / H;
  auto qkv = c_attn_->forward(x).split(C, 2);
  auto q = qkv[0].view({B, T, H, D}).transpose(1, 2);
  auto k = qkv[1].view({B, T, H, D}).transpose(1, 2);
  auto v = qkv[2].view({B, T, H, D}).transpose(1, 2);
  const double p = is_training() ? c_.dropout : 0.0;
  torch::Tensor y;
  if (c_.sdpa) {
    y = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, p, /*is_causal=*/true);
  } else {
    auto att = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(D)));
    auto mask = torch::ones({T, T}, torch::TensorOptions().device(x.device()).dtype(torch::kBool)).tril();
    att = att.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
    att = torch::softmax(att, -1);
    att = torch::dropout(att, p, is_training());
    y = torch::matmul(att, v);
  }
  y = y.transpose(1, 2).contiguous().view({B, T, C});
  return torch::dropout(attn_proj_->forward(y), p, is_training());
}

torch::Tensor GptBlockImpl::forward(const torch::Tensor& x) {
  const double p = is_training() ? c_.dropout : 0.0;
  auto h = x + attention(ln1_->forward(x));
  auto m = mlp_proj_->forward(torch::gelu(c_fc_->forward(ln2_->forward(h)), "tanh"));
  return h + torch::dropout(m, p, is_training());
}

GptImpl::GptImpl(const GptConfig& c) : c_(c) {
  TORCH_CHECK(c.width % c.heads == 0, "width must be a multiple of heads");
  TORCH_CHECK(c.vocab_multiple >= 1, "vocab_multiple must be >= 1");
  const int64_t padded = c.padded_vocab();
  wte_ = register_module("wte", torch::nn::Embedding(c.vocab, c.width));
  wpe_ = register_module("wpe", torch::nn::Embedding(c.context, c.width));
  {
    torch::NoGradGuard ng;
    wte_->weight.normal_(0.0, 0.02);
    wpe_->weight.normal_(0.0, 0.02);
  }
  if (padded > c.vocab) {  // the same draws as without padding, then zero rows below them
    torch::NoGradGuard ng;
    auto w = torch::zeros({padded, c.width});
    w.narrow(0, 0, c.vocab).copy_(wte_->weight);
    wte_->weight.set_data(w);
    pad_mask_ = torch::zeros({padded});
    pad_mask_.narrow(0, c.vocab, padded - c.vocab).fill_(-std::numeric_limits<float>::infinity());
  }
  for (int64_t i = 0; i < c.layers; ++i) blocks_.push_back(register_module("h" + std::to_string(i), GptBlock(c)));
  ln_f_ = register_module("ln_f", layer_norm(c.width));
}

torch::Tensor GptImpl::forward(const torch::Tensor& idx) {
  const int64_t T = idx.size(1);
  TORCH_CHECK(T <= c_.context, "sequence of ", T, " tokens is longer than the context ", c_.context);
  auto pos = torch::arange(T, torch::TensorOptions().device(idx.device()).dtype(torch::kLong));
  auto x = torch::dropout(wte_->forward(idx) + wpe_->forward(pos), is_training() ? c_.dropout : 0.0, is_training());
  if (c_.sdpa && kernel_.empty()) {
    const int64_t D = c_.width / c_.heads;
    auto probe = torch::empty({1, c_.heads, T, D}, x.options().dtype(
        at::autocast::is_autocast_enabled(x.device().type()) ? at::autocast::get_autocast_dtype(x.device().type())
                                                             : x.scalar_type()));
    kernel_ = kernel_name(at::_fused_sdp_choice(probe, probe, probe, {}, is_training() ? c_.dropout : 0.0, true));
  } else if (!c_.sdpa) {
    kernel_ = "plain (materialized masked softmax)";
  }
  if (block_observer) block_observer(-1, x);
  x = run_blocks(
      c_.layers, segments_, is_training(), [this](int64_t i, const torch::Tensor& h) { return blocks_[i]->forward(h); },
      nullptr, block_observer, x);
  x = ln_f_->forward(x);
  if (pad_mask_.defined() && pad_mask_.device() != x.device()) pad_mask_ = pad_mask_.to(x.device());
  return torch::nn::functional::linear(x, wte_->weight, pad_mask_);  // tied output embedding
}

torch::Tensor GptImpl::loss(const torch::Tensor& idx, const torch::Tensor& targets) {
  auto logits = forward(idx);
  return torch::nn::functional::cross_entropy(logits.view({-1, logits.size(-1)}), targets.reshape({-1}));
}

double GptImpl::train_flops_per_token(int64_t T) const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  n -= wpe_->weight.numel();                            // a lookup, no multiply-adds
  n -= (c_.padded_vocab() - c_.vocab) * c_.width;       // padding: work done, not model FLOPs
  return 6.0 * n + 12.0 * c_.layers * T * c_.width;
}

double GptImpl::block_forward_flops_per_token(int64_t T) const {
  const double C = static_cast<double>(c_.width);
  return 2.0 * (3 * C * C + C * C + 8 * C * C) + 4.0 * T * C;  // matmuls + attention scores/values
}

}  // namespace efftrain::models

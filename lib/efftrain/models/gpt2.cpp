#include "efftrain/models/gpt2.h"

#include <ATen/autocast_mode.h>

#include <cmath>
#include <limits>

#include "efftrain/kernels/cross_entropy.h"
#include "efftrain/kernels/embedding.h"
#include "efftrain/kernels/linear.h"
#include "efftrain/kernels/mlp.h"
#include "efftrain/kernels/param_casts.h"
#include "efftrain/kernels/residual_norm.h"
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
torch::Tensor dense(const torch::nn::Linear& l, const torch::Tensor& x, kernels::Matmul how) {
  return kernels::linear(x, l->weight, l->bias, how);
}
torch::nn::LayerNorm layer_norm(int64_t w) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({w}).eps(1e-5));
}
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Mean cross-entropy of the tied classifier over [rows, width] features, `chunk` rows of
// logits at a time, with the classifier's gradients computed in forward: each chunk's logits
// give their loss, are turned in place into (softmax - onehot) -- the gradient of the loss
// before the upstream factor g / rows, which is not known yet -- and are multiplied out into dx
// and dW at once. Backward only scales those two by g / rows, so no logits are kept and none are
// computed again (the recompute of a logits chunk would cost one more classifier matmul per
// step: 2.5 TFLOP for GPT-2 small at 32 x 1024). The unscaled gradient also keeps fp16 away
// from underflow (the loss scale arrives as g).
struct HeadArgs {
  torch::Tensor mask;  // [vocab] bias: 0, -inf on the padding; undefined without padding
  int64_t chunk;
  kernels::Matmul how;
};
struct ChunkedHeadLoss : torch::autograd::Function<ChunkedHeadLoss> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& targets, HeadArgs a) {
    const int64_t n = x.size(0);
    auto t = targets.to(torch::kLong).contiguous();
    std::vector<torch::Tensor> losses;
    auto dx = torch::empty(x.sizes(), x.options().dtype(torch::kFloat));
    auto dw = torch::empty_like(w, w.options().dtype(torch::kFloat));  // the first chunk writes it
    // w and the mask in the logits' dtype (autocast's, as in forward()), cast once for every chunk
    const auto dt = kernels::run_dtype(x);
    const auto wd = kernels::param_cast(dt, w), mask = kernels::param_cast(dt, a.mask);
    for (int64_t s = 0; s < n; s += a.chunk) {
      const int64_t m = std::min(a.chunk, n - s);
      auto xd = x.narrow(0, s, m).to(dt);
      auto logits = kernels::linear(xd, wd, mask, a.how);
      auto tc = t.narrow(0, s, m);
      losses.push_back(kernels::cross_entropy_rows_to_grad(logits, tc));
      auto dxc = dx.narrow(0, s, m);
      if (dx.is_cuda() && dt != torch::kFloat) {  // fp32 results from cuBLAS (dW: added in its epilogue)
        kernels::mm_out(a.how, dxc, logits, wd);
        if (s == 0)
          kernels::mm_out(a.how, dw, logits.t(), xd);
        else
          kernels::addmm_(a.how, dw, logits.t(), xd);
      } else {
        dxc.copy_(logits.mm(wd));
        if (s == 0)
          dw.copy_(logits.t().mm(xd));
        else
          dw.add_(logits.t().mm(xd));
      }
    }
    ctx->save_for_backward({dx, dw, w});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    return torch::cat(losses).mean();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto& w = s[2];
    const auto n = static_cast<double>(s[0].size(0));
    auto g = grads[0].to(torch::kFloat) / n;  // on the device: no host synchronization
    auto dx = (s[0] * g).to(static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt()));
    torch::Tensor dw;  // added into w.grad in one pass where kernels::weight_grad would
    if (kernels::grad_in_place(w, s[1].device()))
      w.grad().addcmul_(s[1], g);
    else
      dw = (s[1] * g).to(w.scalar_type());
    return {dx, dw, torch::Tensor(), torch::Tensor()};
  }
};

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
  auto [q, k, v] = kernels::qkv_linear(x, c_attn_->weight, c_attn_->bias, H, c_.matmul);
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
  return dense(attn_proj_, y, c_.matmul);
}

torch::Tensor GptBlockImpl::mlp(const torch::Tensor& x) {
  return kernels::mlp(x, c_fc_->weight, c_fc_->bias, mlp_proj_->weight, mlp_proj_->bias,
                      /*keep_activation=*/!c_.selective_recompute, c_.fused_gelu, c_.matmul);
}

std::pair<torch::Tensor, torch::Tensor> GptBlockImpl::add_norm(const torch::Tensor& s, const torch::Tensor& h,
                                                               const torch::nn::LayerNorm& ln) {
  return kernels::residual_layer_norm(s, h, ln->weight, ln->bias, c_.dropout, is_training(), 1e-5, c_.fused_norm);
}

torch::Tensor GptBlockImpl::forward(const torch::Tensor& x) {
  auto [h, a] = add_norm(x, attention(ln1_->forward(x)), ln2_);
  return h + torch::dropout(mlp(a), is_training() ? c_.dropout : 0.0, is_training());
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

void GptImpl::set_selective_recompute(bool on) {
  c_.selective_recompute = on;
  for (auto& b : blocks_) b->c_.selective_recompute = on;
}

const torch::Tensor& GptImpl::pad_mask_on(const torch::Device& d) {
  if (pad_mask_.defined() && pad_mask_.device() != d) pad_mask_ = pad_mask_.to(d);
  return pad_mask_;
}

torch::Tensor GptImpl::forward(const torch::Tensor& idx) {
  auto x = features(idx);
  return kernels::linear(x, wte_->weight, pad_mask_on(x.device()), c_.matmul);  // tied output embedding
}

void GptImpl::refresh_casts(const torch::Tensor& x) {
  kernels::refresh_casts(casts_, x, true, [&] {
    std::vector<torch::Tensor> ts{wte_->weight, pad_mask_on(x.device())};
    for (auto& b : blocks_)
      for (const auto* l : {&b->c_attn_, &b->attn_proj_, &b->c_fc_, &b->mlp_proj_}) {
        ts.push_back((*l)->weight);
        ts.push_back((*l)->bias);
      }
    return ts;
  });
}

torch::Tensor GptImpl::features(const torch::Tensor& idx) {
  const int64_t T = idx.size(1);
  TORCH_CHECK(T <= c_.context, "sequence of ", T, " tokens is longer than the context ", c_.context);
  // positions 0..T-1 are the table's first T rows: a slice, whose gradient is a copy (an embedding
  // lookup's backward sorts the indices and gathers)
  auto e = kernels::embedding(wte_->weight, idx) + wpe_->weight.narrow(0, 0, T);
  const double drop = is_training() ? c_.dropout : 0.0;
  const bool chain = c_.fused_norm && c_.layers > 0 && !block_observer && (segments_.empty() || !is_training());
  // chained: the embedding's dropout with block 0's ln_1 in one fused residual LayerNorm (onto a
  // zero stream, s = 0 + dropout(e)); else dropout alone
  torch::Tensor x, a;
  if (chain)
    std::tie(x, a) = blocks_[0]->add_norm(torch::zeros_like(e), e, blocks_[0]->ln1_);
  else
    x = torch::dropout(e, drop, is_training());
  refresh_casts(x);
  if (c_.sdpa && kernel_.empty()) {
    const int64_t D = c_.width / c_.heads;
    auto probe = torch::empty({1, c_.heads, T, D}, x.options().dtype(
        at::autocast::is_autocast_enabled(x.device().type()) ? at::autocast::get_autocast_dtype(x.device().type())
                                                             : x.scalar_type()));
    kernel_ = kernel_name(at::_fused_sdp_choice(probe, probe, probe, {}, is_training() ? c_.dropout : 0.0, true));
  } else if (!c_.sdpa) {
    kernel_ = "plain (materialized masked softmax)";
  }
  norm_kernel_ = "aten";
  gelu_kernel_ = c_.fused_gelu ? kernels::mlp_path(x, c_.width, 4 * c_.width) : "aten";
  if (c_.fused_norm)
    norm_kernel_ = std::string(kernels::residual_norm_path(x, x, ln_f_->weight, ln_f_->bias)) + (chain ? "" : ", within blocks");
  if (chain) {  // each block's MLP output joins the stream with the next block's ln_1, the last's with ln_f
    for (int64_t i = 0; i < c_.layers; ++i) {
      auto& b = blocks_[i];
      auto [h, m_in] = b->add_norm(x, b->attention(a), b->ln2_);
      std::tie(x, a) = b->add_norm(h, b->mlp(m_in), i + 1 < c_.layers ? blocks_[i + 1]->ln1_ : ln_f_);
    }
    return a;
  }
  if (block_observer) block_observer(-1, x);
  x = run_blocks(
      c_.layers, segments_, is_training(), [this](int64_t i, const torch::Tensor& h) { return blocks_[i]->forward(h); },
      block_observer, x);
  return ln_f_->forward(x);
}

torch::Tensor GptImpl::loss(const torch::Tensor& idx, const torch::Tensor& targets) {
  if ((c_.selective_recompute || c_.fused_loss) && torch::GradMode::is_enabled()) {
    auto x = features(idx);
    auto rows = x.reshape({-1, x.size(-1)});
    TORCH_CHECK(rows.size(0) > 0, "GPT loss: no tokens");
    loss_kernel_ = std::string(kernels::cross_entropy_path(rows)) + ", chunked";
    return ChunkedHeadLoss::apply(rows, wte_->weight, targets.reshape({-1}),
                                  HeadArgs{pad_mask_on(x.device()), head_chunk_rows(), c_.matmul});
  }
  auto logits = forward(idx);
  auto flat = logits.view({-1, logits.size(-1)});
  if (c_.fused_loss) {
    loss_kernel_ = kernels::cross_entropy_path(flat);
    return kernels::cross_entropy_mean(flat, targets.reshape({-1}), /*logits_dead=*/true);
  }
  loss_kernel_ = "aten";
  return torch::nn::functional::cross_entropy(flat, targets.reshape({-1}));
}

void use_sdpa_backend(const std::string& name) {
  const bool all = name == "auto";
  TORCH_CHECK(all || name == "cudnn" || name == "flash" || name == "efficient" || name == "math",
              "unknown SDPA backend ", name);
  auto& ctx = at::globalContext();
  ctx.setSDPUseCuDNN(all || name == "cudnn");
  ctx.setSDPUseFlash(all || name == "flash");
  ctx.setSDPUseMemEfficient(all || name == "efficient");
  ctx.setSDPUseMath(all || name == "math");
}

int64_t GptImpl::head_chunk_rows() const {
  if (c_.head_chunk_rows > 0) return c_.head_chunk_rows;
  return c_.selective_recompute ? 2048 : 16384;
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

// Language modelling: a GPT on a token stream cut into sequences of seq_len (+1 shifted
// targets), shuffled per epoch from the seed and sharded by rank; perplexity = exp(mean token
// cross-entropy) over the whole evaluation split.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdlib>

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/data/gpt2_tokenizer.h"
#include "efftrain/data/loader.h"
#include "efftrain/data/sampler.h"
#include "efftrain/engine/context.h"
#include "efftrain/kernels/cross_entropy.h"
#include "efftrain/kernels/matmul.h"
#include "efftrain/memory/probe.h"
#include "efftrain/models/gpt2.h"
#include "efftrain/tasks/task.h"

namespace efftrain {

namespace {

std::string default_cache_dir() {
  if (const char* c = std::getenv("EFFTRAIN_CACHE"); c && *c) return std::string(c) + "/tokens";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cache/efftrain/tokens";
}

struct TokenSplits {
  torch::Tensor train, eval;  // int64 token streams (CPU)
  int64_t vocab = 0;
  std::string source;
};

// A deterministic order-1 Markov chain over `vocab` tokens: each token is followed by one of
// 3 successors (fixed per token) -- learnable, with a known entropy floor.
TokenSplits synthetic_tokens(const config::DataConfig& d, int64_t vocab) {
  auto gen = at::detail::createCPUGenerator(0x70c3eedULL);
  auto successors = torch::randint(0, vocab, {vocab, 3}, gen, torch::kLong);
  auto make = [&](int64_t n) {
    auto choice = torch::randint(0, 3, {n}, gen, torch::kLong);
    std::vector<int64_t> out(n);
    const auto* s = successors.data_ptr<int64_t>();
    const auto* c = choice.data_ptr<int64_t>();
    int64_t tok = 0;
    for (int64_t i = 0; i < n; ++i) {
      out[i] = tok;
      tok = s[tok * 3 + c[i]];
    }
    return torch::tensor(out, torch::kLong);
  };
  TokenSplits t;
  t.train = make(d.train_samples * (d.seq_len + 1));
  t.eval = make(d.eval_samples * (d.seq_len + 1));
  t.vocab = vocab;
  t.source = "synthetic order-1 Markov chain";
  return t;
}

TokenSplits wikitext_tokens(const config::DataConfig& d) {
  if (d.root.empty())
    throw UserError("task.data.root: expected the folder holding wikitext-2/wiki.{train,valid,test}.tokens, found ''"
                    " (or set task.data.synthetic: true)");
  auto split_file = [&](const std::string& split) {
    for (const std::string& dir : {d.root, d.root + "/wikitext-2"}) {
      const std::string f = dir + "/wiki." + split + ".tokens";
      if (files::exists(f)) return f;
    }
    throw UserError(d.root + "/wikitext-2/wiki." + split + ".tokens: WikiText-2 file not found (looked in " + d.root +
                    " and " + d.root + "/wikitext-2; task.data.root)");
  };
  std::string vocab_dir = d.vocab_dir;
  if (vocab_dir.empty()) vocab_dir = files::exists(d.root + "/gpt2/vocab.json") ? d.root + "/gpt2" : d.root + "/../gpt2";
  const auto tok = data::Gpt2Tokenizer::load(vocab_dir);
  const std::string cache = d.cache_dir.empty() ? default_cache_dir() : d.cache_dir;
  auto load = [&](const std::string& split) {
    auto ids = data::tokenize_file_cached(tok, split_file(split), cache);
    return torch::from_blob(ids.data(), {static_cast<int64_t>(ids.size())}, torch::kUInt16).to(torch::kLong);
  };
  TokenSplits t;
  t.train = load(d.train_split);
  t.eval = load(d.eval_split);
  t.vocab = tok.vocab_size();
  t.source = "WikiText-2 (" + d.train_split + " / " + d.eval_split + "), GPT-2 BPE";
  return t;
}

// What task.model.matmul tuned has found in this process (null in the other modes).
nlohmann::json matmul_tuning(kernels::Matmul m) {
  if (m != kernels::Matmul::tuned) return nullptr;
  const auto t = kernels::matmul_tuning();
  return {{"shapes", t.shapes}, {"changed", t.changed}, {"first_ms", t.first_ms}, {"chosen_ms", t.chosen_ms},
          {"tuning_s", t.tuning_s}};
}

class LanguageModelTask : public Task {
 public:
  LanguageModelTask(const BuildContext& ctx, std::string name, TokenSplits splits, models::Gpt model)
      : name_(std::move(name)), splits_(std::move(splits)), model_(std::move(model)), device_(ctx.device),
        T_(ctx.cfg.task.data.seq_len), batch_(ctx.cfg.train.batch_size),
        n_train_((splits_.train.size(0) - 1) / T_),
        sampler_(n_train_, batch_, ctx.cfg.train.seed, ctx.rank, ctx.world_size),
        on_device_(ctx.cfg.task.data.input_path != "host"), sdpa_backend_(ctx.cfg.task.model.sdpa_backend) {
    if (T_ > model_->config().context)
      throw UserError("task.data.seq_len: expected at most the model context " + std::to_string(model_->config().context) +
                      ", found " + std::to_string(T_));
    const int64_t eval_seqs = (splits_.eval.size(0) - 1) / T_;
    n_eval_ = ctx.cfg.task.data.eval_limit > 0 ? std::min(eval_seqs, ctx.cfg.task.data.eval_limit) : eval_seqs;
    if (n_eval_ < 1) throw UserError("task.data: the evaluation split has fewer than seq_len + 1 tokens");
    model_->to(device_);
    if (on_device_) splits_.train = splits_.train.to(device_);
    splits_.eval = splits_.eval.to(device_);
    offsets_ = torch::arange(T_ + 1, torch::kLong);
    device_offsets_ = offsets_.to(device_);
  }

  std::string model_name() const override { return name_; }
  torch::nn::Module& model() override { return *model_; }

  Batch next_batch() override {
    const auto idx_vec = sampler_.next_batch();
    auto starts = torch::tensor(idx_vec, torch::kLong);
    torch::Tensor seq;
    if (on_device_) {
      // Only the batch's start indices cross (data::to_device_async).
      auto pos = data::to_device_async(starts, device_).mul_(T_).view({-1, 1}) + device_offsets_.view({1, -1});
      seq = splits_.train.index({pos});
    } else {
      auto pos = (starts * T_).view({-1, 1}) + offsets_.view({1, -1});
      seq = splits_.train.index({pos});
      seq = data::to_device_async(seq, device_);
    }
    Batch b;
    b.input = seq.slice(1, 0, T_);
    b.target = seq.slice(1, 1, T_ + 1);
    b.samples = static_cast<int64_t>(idx_vec.size());
    b.tokens = b.samples * T_;
    return b;
  }

  void skip_to(int64_t batches) override { sampler_.seek(batches); }

  torch::Tensor loss(const Batch& b) override { return model_->loss(b.input, b.target); }

  EvalResult evaluate() override {
    torch::NoGradGuard ng;
    model_->eval();
    const auto& offs = device_offsets_;
    torch::Tensor sum = torch::zeros({}, torch::TensorOptions().device(device_).dtype(torch::kDouble));
    for (int64_t s = 0; s < n_eval_; s += batch_) {
      const int64_t e = std::min(n_eval_, s + batch_);
      auto starts = torch::arange(s, e, torch::TensorOptions().device(device_).dtype(torch::kLong)) * T_;
      auto seq = splits_.eval.index({starts.view({-1, 1}) + offs.view({1, -1})});
      auto logits = model_->forward(seq.slice(1, 0, T_));
      auto flat = logits.view({-1, logits.size(-1)});
      auto targets = seq.slice(1, 1, T_ + 1).reshape({-1});
      if (model_->config().fused_loss)  // no fp32 copy of the logits here either
        sum += kernels::cross_entropy_rows(flat, targets).second.sum().to(torch::kDouble);
      else
        sum += torch::nn::functional::cross_entropy(flat.to(torch::kFloat), targets,
                                                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .to(torch::kDouble);
    }
    model_->train();
    EvalResult r;
    r.examples = n_eval_ * T_;
    r.loss = sum.item<double>() / static_cast<double>(r.examples);
    r.value = std::exp(r.loss);
    return r;
  }

  MetricInfo metric() const override { return {"perplexity", false}; }
  double train_flops_per_sample() const override { return model_->train_flops_per_token(T_) * T_; }
  int64_t tokens_per_sample() const override { return T_; }
  int64_t train_examples() const override { return n_train_; }
  int64_t num_blocks() const override { return model_->num_blocks(); }
  std::vector<double> block_forward_flops_per_sample() const override {
    return std::vector<double>(model_->num_blocks(), model_->block_forward_flops_per_token(T_) * T_);
  }
  bool set_selective_recompute(bool on) override {
    model_->set_selective_recompute(on);
    return true;
  }
  void set_checkpoint_segments(const std::vector<std::pair<int64_t, int64_t>>& s) override {
    model_->set_checkpoint_segments(s);
  }
  std::vector<BlockMemory> probe_block_memory(const std::function<std::shared_ptr<void>()>& scope) override {
    auto idx = torch::randint(0, model_->config().vocab, {batch_, T_},
                              torch::TensorOptions().device(device_).dtype(torch::kLong));
    return measure_block_memory(
        device_, [&](BlockObserver o) { model_->block_observer = std::move(o); },
        [&] {
          auto guard = scope();
          auto y = model_->forward(idx);
        });
  }

  nlohmann::json describe() const override {
    const auto& c = model_->config();
    int64_t params = 0;
    for (const auto& p : model_->parameters()) params += p.numel();
    return {{"layers", c.layers}, {"heads", c.heads}, {"width", c.width}, {"context", c.context},
            {"vocab", c.vocab}, {"vocab_padded", c.padded_vocab()},
            {"parameters_unpadded", params - (c.padded_vocab() - c.vocab) * c.width},
            {"dropout", c.dropout}, {"seq_len", T_},
            {"attention", c.sdpa ? "sdpa" : "plain"},
            {"sdpa_backend", sdpa_backend_},
            {"attention_kernel", model_->attention_kernel().empty() ? nlohmann::json(nullptr)
                                                                    : nlohmann::json(model_->attention_kernel())},
            {"fused_loss", c.fused_loss},
            {"loss_kernel", model_->loss_kernel().empty() ? nlohmann::json(nullptr) : nlohmann::json(model_->loss_kernel())},
            {"head_chunk_rows", model_->head_chunk_rows()},
            {"fused_norm", c.fused_norm},
            {"norm_kernel", model_->norm_kernel().empty() ? nlohmann::json(nullptr) : nlohmann::json(model_->norm_kernel())},
            {"fused_gelu", c.fused_gelu},
            {"gelu_kernel", model_->gelu_kernel().empty() ? nlohmann::json(nullptr) : nlohmann::json(model_->gelu_kernel())},
            {"matmul", kernels::matmul_name(c.matmul)}, {"matmul_tuning", matmul_tuning(c.matmul)},
            {"data", splits_.source}, {"train_sequences", n_train_}, {"train_tokens", splits_.train.size(0)},
            {"eval_tokens", n_eval_ * T_}, {"input_path", on_device_ ? "device" : "host"}};
  }

 private:
  std::string name_;
  TokenSplits splits_;
  models::Gpt model_;
  torch::Device device_;
  int64_t T_, batch_, n_train_, n_eval_ = 0;
  data::EpochSampler sampler_;
  bool on_device_;
  std::string sdpa_backend_;
  torch::Tensor offsets_, device_offsets_;  // 0..T on the CPU and on the run's device
};

std::unique_ptr<Task> make_gpt(const BuildContext& ctx, models::GptConfig g, const std::string& name) {
  const auto& d = ctx.cfg.task.data;
  TokenSplits splits;
  if (d.synthetic) {
    if (ctx.cfg.task.model.vocab < 2) throw UserError("task.model.vocab: expected the vocabulary size (>= 2) for synthetic text");
    splits = synthetic_tokens(d, ctx.cfg.task.model.vocab);
  } else {
    splits = wikitext_tokens(d);
  }
  g.vocab = splits.vocab;
  g.dropout = ctx.cfg.task.model.dropout;
  g.sdpa = ctx.cfg.task.model.attention == "sdpa";
  models::use_sdpa_backend(ctx.cfg.task.model.sdpa_backend);
  g.vocab_multiple = ctx.cfg.task.model.vocab_multiple;
  g.fused_loss = ctx.cfg.task.model.fused_loss;
  g.fused_norm = ctx.cfg.task.model.fused_norm;
  g.fused_gelu = ctx.cfg.task.model.fused_gelu;
  g.matmul = *kernels::parse_matmul(ctx.cfg.task.model.matmul);  // the schema admits only the three
  g.head_chunk_rows = ctx.cfg.task.model.head_chunk_rows;
  torch::manual_seed(ctx.cfg.train.seed);
  return std::make_unique<LanguageModelTask>(ctx, name, std::move(splits), models::Gpt(g));
}

}  // namespace

EFFTRAIN_REGISTER(Task, "wikitext2_gpt2",
                  "GPT-2 small (124,439,808 parameters) on WikiText-2 with the GPT-2 BPE, perplexity",
                  [](const BuildContext& ctx) { return make_gpt(ctx, models::GptConfig{}, "gpt2"); });
EFFTRAIN_REGISTER(Task, "wikitext2_gpt",
                  "GPT with task.model.depth/heads/width/context on WikiText-2 or synthetic text (test variants)",
                  [](const BuildContext& ctx) {
                    const auto& m = ctx.cfg.task.model;
                    models::GptConfig g;
                    g.layers = m.depth;
                    g.heads = m.heads;
                    g.width = m.width;
                    g.context = m.context;
                    if (m.width % m.heads != 0)
                      throw UserError("task.model.width: expected a multiple of task.model.heads (" +
                                      std::to_string(m.heads) + "), found " + std::to_string(m.width));
                    return make_gpt(ctx, g, "gpt");
                  });

}  // namespace efftrain

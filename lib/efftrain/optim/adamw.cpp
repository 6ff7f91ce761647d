// adamw: the C++ frontend's torch::optim::AdamW, the baseline reference.
#include "efftrain/core/error.h"
#include "efftrain/engine/context.h"
#include "efftrain/optim/optimizer.h"

namespace efftrain {

namespace {
class AdamW : public Optimizer {
 public:
  explicit AdamW(const config::OptimConfig& c) : cfg_(c) {}

  // Weight decay applies to every tensor, as torch.optim.AdamW with one parameter group.
  void attach(const ParamSet& params) override {
    params_ = params.tensors;
    opt_ = std::make_unique<torch::optim::AdamW>(
        params_, torch::optim::AdamWOptions(cfg_.lr)
                    .betas({cfg_.betas[0], cfg_.betas[1]})
                    .eps(cfg_.eps)
                    .weight_decay(cfg_.weight_decay));
  }

  void step(double lr, const torch::Tensor& found_inf) override {
    // The reference path reads the flag on the host (one sync); adamw_fused does not.
    if (found_inf.defined() && found_inf.item<float>() != 0.f) return;
    for (auto& g : opt_->param_groups()) g.options().set_lr(lr);
    opt_->step();
  }

  void zero_grad() override { opt_->zero_grad(/*set_to_none=*/true); }

  void save(const std::string& path) const override { torch::save(*opt_, path); }
  void load(const std::string& path) override {
    try {
      torch::load(*opt_, path);
    } catch (const c10::Error& e) {
      throw UserError(path + ": not an adamw optimizer state for these parameters (" + e.what_without_backtrace() + ")");
    }
  }

  int64_t state_bytes() const override {
    int64_t bytes = 0;
    for (const auto& kv : opt_->state()) {
      const auto& s = static_cast<const torch::optim::AdamWParamState&>(*kv.second);
      bytes += s.exp_avg().numel() * s.exp_avg().element_size();
      bytes += s.exp_avg_sq().numel() * s.exp_avg_sq().element_size();
      if (s.max_exp_avg_sq().defined())
        bytes += s.max_exp_avg_sq().numel() * s.max_exp_avg_sq().element_size();
    }
    return bytes;
  }

  nlohmann::json report() const override {
    return {{"name", "adamw"},
            {"implementation", "torch::optim::AdamW (per-parameter loop)"},
            {"betas", cfg_.betas},
            {"eps", cfg_.eps},
            {"weight_decay", cfg_.weight_decay},
            {"state_bytes", state_bytes()}};
  }

 private:
  config::OptimConfig cfg_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<torch::optim::AdamW> opt_;
};
}  // namespace

EFFTRAIN_REGISTER(Optimizer, "adamw", "AdamW from the LibTorch C++ frontend (the baseline reference)",
                  [](const BuildContext& ctx) { return std::make_unique<AdamW>(ctx.cfg.optim); });

}  // namespace efftrain

// adamw_fused: AdamW through ATen's fused multi-tensor kernel (one launch per parameter
// group), with decay (matrices, conv kernels) and no-decay (biases, norms, 1-D parameters)
// groups. Consumes the found-inf flag on the device: a step with overflow changes nothing and
// needs no host sync.
#include "efftrain/core/error.h"
#include "efftrain/engine/context.h"
#include "efftrain/optim/optimizer.h"

namespace efftrain {

namespace {

class FusedAdamW : public Optimizer {
 public:
  explicit FusedAdamW(const config::OptimConfig& c) : cfg_(c) {}

  void attach(const ParamSet& params) override {
    groups_.clear();
    Group decay{{}, {}, {}, {}, cfg_.weight_decay}, no_decay{{}, {}, {}, {}, 0.0};
    for (size_t i = 0; i < params.tensors.size(); ++i) {
      const auto& p = params.tensors[i];
      Group& g = params.decay[i] ? decay : no_decay;
      g.params.push_back(p);
      g.exp_avg.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      g.exp_avg_sq.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      g.steps.push_back(torch::zeros({}, p.options().dtype(torch::kFloat)));
    }
    for (Group* g : {&decay, &no_decay})
      if (!g->params.empty()) groups_.push_back(std::move(*g));
  }

  void step(double lr, const torch::Tensor& found_inf) override {
    torch::NoGradGuard ng;
    for (auto& g : groups_) {
      std::vector<torch::Tensor> P, G, M, V, S;
      for (size_t i = 0; i < g.params.size(); ++i) {
        if (!g.params[i].grad().defined()) continue;
        P.push_back(g.params[i]);
        G.push_back(g.params[i].grad());
        M.push_back(g.exp_avg[i]);
        V.push_back(g.exp_avg_sq[i]);
        S.push_back(g.steps[i]);
      }
      if (P.empty()) continue;
      at::_foreach_add_(S, 1);
      std::optional<torch::Tensor> inf;
      if (found_inf.defined()) inf = found_inf;
      at::_fused_adamw_(P, G, M, V, /*max_exp_avg_sqs=*/{}, S, lr, cfg_.betas[0], cfg_.betas[1], g.weight_decay,
                        cfg_.eps, /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, inf);
      if (found_inf.defined()) at::_foreach_sub_(S, std::vector<torch::Tensor>(S.size(), found_inf));
    }
  }

  void zero_grad() override {
    for (auto& g : groups_)
      for (auto& p : g.params) p.mutable_grad() = torch::Tensor();
  }

  void save(const std::string& path) const override {
    std::vector<torch::Tensor> state;
    for (const auto& g : groups_)
      for (size_t i = 0; i < g.params.size(); ++i) {
        state.push_back(g.exp_avg[i]);
        state.push_back(g.exp_avg_sq[i]);
        state.push_back(g.steps[i]);
      }
    torch::save(state, path);
  }

  void load(const std::string& path) override {
    std::vector<torch::Tensor> state;
    try {
      torch::load(state, path);
    } catch (const c10::Error& e) {
      throw UserError(path + ": cannot read adamw_fused state (" + e.what_without_backtrace() + ")");
    }
    size_t n = 0;
    for (const auto& g : groups_) n += 3 * g.params.size();
    if (state.size() != n)
      throw UserError(path + ": adamw_fused state has " + std::to_string(state.size()) + " tensors, expected " +
                      std::to_string(n));
    size_t k = 0;
    torch::NoGradGuard ng;
    for (auto& g : groups_)
      for (size_t i = 0; i < g.params.size(); ++i) {
        for (torch::Tensor* dst : {&g.exp_avg[i], &g.exp_avg_sq[i], &g.steps[i]}) {
          const auto& src = state[k++];
          if (src.sizes() != dst->sizes())
            throw UserError(path + ": adamw_fused state tensor " + std::to_string(k - 1) + " has shape " +
                            c10::str(src.sizes()) + ", expected " + c10::str(dst->sizes()));
          dst->copy_(src);
        }
      }
  }

  int64_t state_bytes() const override {
    int64_t b = 0;
    for (const auto& g : groups_)
      for (size_t i = 0; i < g.params.size(); ++i)
        b += (g.exp_avg[i].numel() + g.exp_avg_sq[i].numel()) * g.exp_avg[i].element_size() +
             g.steps[i].numel() * g.steps[i].element_size();
    return b;
  }

  nlohmann::json report() const override {
    nlohmann::json groups = nlohmann::json::array();
    for (const auto& g : groups_) {
      int64_t n = 0;
      for (const auto& p : g.params) n += p.numel();
      groups.push_back({{"weight_decay", g.weight_decay}, {"tensors", g.params.size()}, {"elements", n}});
    }
    return {{"name", "adamw_fused"},
            {"implementation", "at::_fused_adamw_ (one multi-tensor launch per group), found-inf on device"},
            {"betas", cfg_.betas},
            {"eps", cfg_.eps},
            {"weight_decay", cfg_.weight_decay},
            {"groups", groups},
            {"state_bytes", state_bytes()}};
  }

  // One parameter group: its parameters, their moments and step counts, and its decay.
  struct Group {
    std::vector<torch::Tensor> params, exp_avg, exp_avg_sq, steps;
    double weight_decay;
  };

 private:
  config::OptimConfig cfg_;
  std::vector<Group> groups_;
};

}  // namespace

EFFTRAIN_REGISTER(Optimizer, "adamw_fused",
                  "AdamW via ATen's fused multi-tensor kernel; decay/no-decay groups; skips on device-side found-inf",
                  [](const BuildContext& ctx) { return std::make_unique<FusedAdamW>(ctx.cfg.optim); });

}  // namespace efftrain

// adaptive: variance-aware gradient accumulation. The gradient noise scale is estimated from
// the first micro-batch's gradient and the accumulated one (two multi-tensor norms a step, no
// extra backward, no gradient copies); every `interval` steps k is re-decided so that the
// global batch (micro-batch x k x world size) tracks factor x B_noise, within [k_min, k_max],
// changing only when the target leaves a +-hysteresis band around the current batch.
// With one process the estimate needs two micro-batches, so k stays >= 2 there. With N
// processes it pairs the local gradient (b*k examples, |g|^2 averaged over the ranks; the
// gradient sync measures it as it sends each bucket, so the collectives still overlap backward)
// with the global one (b*k*N, after the sync), so k may be 1, and every rank sees the same
// estimate and makes the same decision.
#include <cmath>

#include "efftrain/batching/accumulation.h"
#include "efftrain/batching/noise_scale.h"
#include "efftrain/dist/comm.h"
#include "efftrain/engine/context.h"
#include "efftrain/engine/state.h"
#include "efftrain/optim/grads.h"

namespace efftrain {

namespace {

torch::Tensor grad_sq_norm(const std::vector<torch::Tensor>& params) {
  return squared_norm(defined_grads(params), torch::kDouble);
}
torch::Tensor unscaled(const torch::Tensor& sq, const torch::Tensor& loss_scale) {
  return loss_scale.defined() ? sq / loss_scale.to(torch::kDouble).pow(2) : sq;
}

class Adaptive : public Accumulation {
 public:
  Adaptive(const config::AccumulationConfig& c, int64_t micro_batch, std::shared_ptr<dist::Comm> comm,
           torch::Device device)
      : cfg_(c), b_(static_cast<double>(micro_batch)), world_(comm ? comm->size() : 1), comm_(std::move(comm)),
        est_(c.ema, device) {
    const int world = world_;
    k_min_ = world > 1 ? c.k_min : std::max<int64_t>(c.k_min, 2);
    k_ = std::clamp(c.k, k_min_, std::max(k_min_, c.k_max));
    k0_ = k_;
    k_history_.push_back({{"step", 1}, {"k", k_}});
  }

  int64_t next_k(int64_t) override { return k_; }

  void after_backward(int64_t i, int64_t k, const std::vector<torch::Tensor>& params,
                      const torch::Tensor& loss_scale) override {
    cur_k_ = k;
    if (frozen_.is_object() || comm_) return;  // several processes: after_sync
    if (i != 0 && i != k - 1) return;
    torch::NoGradGuard ng;
    auto sq = unscaled(grad_sq_norm(params), loss_scale);
    // The loss of each micro-batch was divided by k: after the first, .grad = g_1 / k.
    if (i == 0) small_ = sq * static_cast<double>(k * k);
    if (i == k - 1) big_ = sq;
  }

  bool wants_global_norm() const override { return comm_ != nullptr && !frozen_.is_object(); }
  void after_sync(const torch::Tensor& local_sq, const torch::Tensor& global_sq,
                  const torch::Tensor& loss_scale) override {
    if (!local_sq.defined()) return;
    small_ = unscaled(local_sq, loss_scale) / static_cast<double>(world_);  // the ranks' mean local |g|^2
    big_ = unscaled(global_sq, loss_scale);
  }

  void after_step(int64_t step, const torch::Tensor& found_inf) override {
    if (frozen_.is_object()) return;
    torch::Tensor valid;
    if (found_inf.defined()) valid = found_inf == 0;
    const double k = static_cast<double>(cur_k_);
    if (comm_ && small_.defined() && big_.defined())
      est_.observe(small_, b_ * k, big_, b_ * k * world_, valid);
    else if (!comm_ && cur_k_ >= 2 && small_.defined() && big_.defined())
      est_.observe(small_, b_, big_, b_ * k, valid);
    if (step % cfg_.interval != 0) return;
    decide(step);
  }

  double lr_scale() const override { return lr_scale_; }
  std::optional<double> noise_scale() const override { return last_b_noise_; }
  bool freeze(int64_t k, int64_t from_step) override {
    if (frozen_.is_object()) return true;  // a resumed run's policy decides again: keep the first freeze
    set_k(std::clamp<int64_t>(k, 1, std::max<int64_t>(1, cfg_.k_max)), from_step);
    frozen_ = {{"step", from_step}, {"k", k_}};
    return true;
  }
  void save_state(torch::serialize::OutputArchive& out) const override {
    est_.save(out);
    state::write_json(out, "decision", {{"k", k_}, {"lr_scale", lr_scale_}, {"k_history", k_history_},
                                        {"noise_history", noise_history_}, {"frozen", frozen_},
                                        {"last_b_noise", last_b_noise_ ? nlohmann::json(*last_b_noise_) : nlohmann::json()}});
  }
  void load_state(torch::serialize::InputArchive& in) override {
    est_.load(in);
    const auto d = state::read_json(in, "decision");
    k_ = d.at("k").get<int64_t>();
    lr_scale_ = d.at("lr_scale").get<double>();
    k_history_ = d.at("k_history");
    noise_history_ = d.at("noise_history");
    frozen_ = d.value("frozen", nlohmann::json());
    if (d.contains("last_b_noise") && d["last_b_noise"].is_number()) last_b_noise_ = d["last_b_noise"].get<double>();
  }

  nlohmann::json report() const override {
    return {{"mode", "adaptive"}, {"k", k_}, {"k_min", k_min_}, {"k_max", cfg_.k_max},
            {"interval", cfg_.interval}, {"factor", cfg_.factor}, {"ema", cfg_.ema},
            {"hysteresis", cfg_.hysteresis}, {"lr_response", cfg_.lr_response},
            {"micro_batch", b_}, {"world_size", world_},
            {"estimate_from", comm_ ? "local (micro-batch x k) and global (x world size) gradients"
                                    : "first micro-batch and accumulated gradients"},
            {"k_history", k_history_}, {"noise_history", noise_history_}, {"frozen_by_policy", frozen_}};
  }

 private:
  void decide(int64_t step) {
    if (est_.observations() == 0) return;
    const double bn = est_.b_noise(), g2 = est_.g2(), tr = est_.trace_sigma();
    noise_history_.push_back({{"step", step}, {"b_noise", std::isfinite(bn) ? nlohmann::json(bn) : nlohmann::json(nullptr)},
                              {"g2", g2}, {"trace_sigma", tr}, {"k", k_}});
    if (!std::isfinite(bn) || bn <= 0) return;
    last_b_noise_ = bn;
    const double per_k = b_ * world_;
    const double current = per_k * static_cast<double>(k_);
    const double target = cfg_.factor * bn;
    if (target <= current * (1.0 + cfg_.hysteresis) && target >= current / (1.0 + cfg_.hysteresis)) return;
    set_k(std::clamp<int64_t>(std::llround(target / per_k), k_min_, cfg_.k_max), step + 1);
  }

  // k from optimizer step `from_step` on, and the learning-rate response to it.
  void set_k(int64_t next, int64_t from_step) {
    if (next == k_) return;
    k_ = next;
    k_history_.push_back({{"step", from_step}, {"k", k_}});
    const double per_k = b_ * world_;
    const double g2 = est_.g2(), tr = est_.trace_sigma();
    const double S = static_cast<double>(k_) / static_cast<double>(k0_);
    if (cfg_.lr_response == "sqrt") lr_scale_ = std::sqrt(S);
    else if (cfg_.lr_response == "linear") lr_scale_ = S;
    else if (cfg_.lr_response == "adascale") {
      const double sigma2 = tr / (per_k * static_cast<double>(k0_));  // variance of a base-batch gradient
      lr_scale_ = g2 > 0 ? (sigma2 + g2) / (sigma2 / S + g2) : 1.0;
    } else lr_scale_ = 1.0;
  }

  config::AccumulationConfig cfg_;
  double b_;
  int world_;
  std::shared_ptr<dist::Comm> comm_;
  NoiseScaleEstimator est_;
  int64_t k_min_, k_, k0_, cur_k_ = 0;
  double lr_scale_ = 1.0;
  torch::Tensor small_, big_;
  std::optional<double> last_b_noise_;  // the latest finite estimate
  nlohmann::json frozen_;               // {step, k} once policy auto froze k; null before
  nlohmann::json k_history_ = nlohmann::json::array();
  nlohmann::json noise_history_ = nlohmann::json::array();
};

}  // namespace

EFFTRAIN_REGISTER(Accumulation, "adaptive",
                  "variance-aware k from the gradient noise scale (McCandlish et al.), re-decided every interval steps",
                  [](const BuildContext& ctx) {
                    return std::make_unique<Adaptive>(ctx.cfg.accumulation, ctx.cfg.train.batch_size, ctx.comm,
                                                      ctx.device);
                  });

}  // namespace efftrain

// Learning-rate schedules: constant, and linear warmup followed by a cosine decay.
#include <cmath>

#include "efftrain/engine/context.h"
#include "efftrain/optim/optimizer.h"

namespace efftrain {

namespace {
class Constant : public Schedule {
 public:
  explicit Constant(double lr) : lr_(lr) {}
  double lr(int64_t, int64_t) const override { return lr_; }
  nlohmann::json report() const override { return {{"name", "constant"}, {"lr", lr_}}; }

 private:
  double lr_;
};

// Position t (in steps or samples): t < W: lr * (f + (1-f) * t/W); then cosine from lr to
// min_lr over the remaining length, and min_lr after the end.
class WarmupCosine : public Schedule {
 public:
  WarmupCosine(const config::ScheduleConfig& c, double lr, int64_t default_total)
      : cfg_(c), lr_(lr), total_(c.total ? c.total : default_total) {}

  double lr(int64_t step, int64_t samples) const override {
    const double t = cfg_.unit == "samples" ? static_cast<double>(samples) : static_cast<double>(step - 1);
    const double w = static_cast<double>(cfg_.warmup);
    if (t < w) return lr_ * (cfg_.warmup_start_factor + (1.0 - cfg_.warmup_start_factor) * t / w);
    const double span = std::max(1.0, static_cast<double>(total_) - w);
    const double progress = std::min(1.0, (t - w) / span);
    return cfg_.min_lr + 0.5 * (lr_ - cfg_.min_lr) * (1.0 + std::cos(M_PI * progress));
  }

  nlohmann::json report() const override {
    return {{"name", "warmup_cosine"}, {"lr", lr_}, {"unit", cfg_.unit}, {"warmup", cfg_.warmup},
            {"warmup_start_factor", cfg_.warmup_start_factor}, {"total", total_}, {"min_lr", cfg_.min_lr}};
  }

 private:
  config::ScheduleConfig cfg_;
  double lr_;
  int64_t total_;
};
}  // namespace

EFFTRAIN_REGISTER(Schedule, "constant", "the learning rate optim.lr throughout (the baseline)",
                  [](const BuildContext& ctx) { return std::make_unique<Constant>(ctx.cfg.optim.lr); });
EFFTRAIN_REGISTER(Schedule, "warmup_cosine",
                  "linear warmup from warmup_start_factor*lr to lr, then cosine to min_lr",
                  [](const BuildContext& ctx) {
                    return std::make_unique<WarmupCosine>(ctx.cfg.schedule, ctx.cfg.optim.lr,
                                                          ctx.cfg.train.max_steps);
                  });

}  // namespace efftrain

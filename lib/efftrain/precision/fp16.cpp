// fp16: float16 autocast, FP32 master weights (parameters and optimizer state stay FP32) and
// dynamic loss scaling without a host sync per step.
#include "efftrain/core/error.h"
#include "efftrain/engine/context.h"
#include "efftrain/engine/state.h"
#include "efftrain/optim/grads.h"
#include "efftrain/precision/autocast.h"
#include "efftrain/precision/loss_scaler.h"
#include "efftrain/precision/precision.h"

namespace efftrain {

namespace {

class Fp16 : public Precision {
 public:
  Fp16(const config::PrecisionConfig& cfg, torch::Device device)
      : cfg_(cfg), device_(device), scaler_(cfg, device) {}

  std::shared_ptr<void> forward_scope() override {
    return std::make_shared<AutocastGuard>(device_.type(), at::kHalf);
  }
  torch::Tensor scale_loss(const torch::Tensor& loss) override { return scaler_.scale(loss); }
  torch::Tensor unscale_and_check(const std::vector<torch::Tensor>& params) override {
    return scaler_.unscale_and_check(defined_grads(params));
  }
  void update() override { scaler_.update(); }
  torch::Tensor loss_scale() const override { return scaler_.scale_tensor(); }

  void check_health(int64_t step) override {
    const double s = scaler_.current_scale();
    if (history_.empty() || history_.back()["scale"].get<double>() != s)
      history_.push_back({{"step", step}, {"scale", s}});
    const int64_t streak = scaler_.overflows_at_min_scale();
    if (streak >= cfg_.max_overflows_at_min_scale)
      throw TrainingFailed("diverged", "fp16 loss scale is at its minimum (" + std::to_string(cfg_.min_loss_scale) +
                                           ") and the gradients still overflow (" + std::to_string(streak) +
                                           " steps in a row); the run cannot make progress: try precision.mode=bf16");
  }

  void save_state(torch::serialize::OutputArchive& out) const override {
    scaler_.save(out);
    state::write_json(out, "scale_history", history_);
  }
  void load_state(torch::serialize::InputArchive& in) override {
    scaler_.load(in);
    history_ = state::read_json(in, "scale_history");
  }
  std::string compute_dtype() const override { return "float16"; }
  nlohmann::json report() const override {
    const int64_t overflows = scaler_.overflows();
    return {{"mode", "fp16"},
            {"autocast_dtype", "float16"},
            {"master_weights", "float32"},
            {"tf32", cfg_.tf32},
            {"loss_scaling", "dynamic"},
            {"initial_scale_power", cfg_.initial_scale_power},
            {"loss_scale_window", cfg_.loss_scale_window},
            {"hysteresis", cfg_.hysteresis},
            {"min_loss_scale", cfg_.min_loss_scale},
            {"final_scale", scaler_.current_scale()},
            {"overflows", overflows},
            {"skipped_steps", overflows},
            {"scale_history", history_}};
  }

 private:
  config::PrecisionConfig cfg_;
  torch::Device device_;
  LossScaler scaler_;
  nlohmann::json history_ = nlohmann::json::array();
};

}  // namespace

EFFTRAIN_REGISTER(Precision, "fp16",
                  "float16 autocast, FP32 master weights, dynamic loss scaling (DeepSpeed-style knobs)",
                  [](const BuildContext& ctx) -> std::unique_ptr<Precision> {
                    if (!ctx.device.is_cuda())
                      throw UserError("precision.mode: fp16 needs a CUDA device (this run is on " + ctx.device.str() +
                                      "); use bf16 on the CPU");
                    return std::make_unique<Fp16>(ctx.cfg.precision, ctx.device);
                  });

}  // namespace efftrain

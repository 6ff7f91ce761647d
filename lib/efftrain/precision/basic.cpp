// fp32 (the baseline) and bf16 autocast (no loss scaling needed).
#include "efftrain/engine/context.h"
#include "efftrain/precision/autocast.h"
#include "efftrain/precision/precision.h"

namespace efftrain {

namespace {

class Fp32 : public Precision {
 public:
  explicit Fp32(bool tf32) : tf32_(tf32) {}
  std::string compute_dtype() const override { return "float32"; }
  nlohmann::json report() const override {
    return {{"mode", "fp32"}, {"autocast_dtype", nullptr}, {"tf32", tf32_}};
  }

 private:
  bool tf32_;
};

class Bf16 : public Precision {
 public:
  Bf16(torch::Device device, bool tf32) : device_(device), tf32_(tf32) {}
  std::shared_ptr<void> forward_scope() override {
    return std::make_shared<AutocastGuard>(device_.type(), at::kBFloat16);
  }
  std::string compute_dtype() const override { return "bfloat16"; }
  nlohmann::json report() const override {
    return {{"mode", "bf16"}, {"autocast_dtype", "bfloat16"}, {"loss_scaling", false}, {"tf32", tf32_}};
  }

 private:
  torch::Device device_;
  bool tf32_;
};

}  // namespace

EFFTRAIN_REGISTER(Precision, "fp32", "FP32 throughout, TF32 only if precision.tf32 (the baseline)",
                  [](const BuildContext& ctx) { return std::make_unique<Fp32>(ctx.cfg.precision.tf32); });
EFFTRAIN_REGISTER(Precision, "bf16", "bfloat16 autocast with FP32 weights, no loss scaling",
                  [](const BuildContext& ctx) {
                    return std::make_unique<Bf16>(ctx.device, ctx.cfg.precision.tf32);
                  });

}  // namespace efftrain

// grad_sync none (one process) and auto (none, or distributed.auto_sync, by world size).
#include "efftrain/dist/grad_sync.h"

#include <map>

#include "efftrain/core/error.h"
#include "efftrain/dist/buckets.h"
#include "efftrain/engine/context.h"

namespace efftrain {

namespace {
class NoSync : public GradSync {
 public:
  void before_backward(bool) override {}
  void finish() override {}
  // One zeroed flat buffer per dtype; each parameter's .grad is its slot (zeroed in one launch).
  void use_static_grads() override {
    torch::NoGradGuard ng;
    std::map<torch::ScalarType, int64_t> total;
    for (const auto& p : params_) total[p.scalar_type()] += p.numel();
    std::map<torch::ScalarType, int64_t> at;
    for (const auto& [dtype, n] : total)
      flats_.push_back(torch::zeros({n}, params_.front().options().dtype(dtype)));
    for (auto& p : params_) {
      const auto dtype = p.scalar_type();
      auto& flat = flats_[std::distance(total.begin(), total.find(dtype))];
      p.mutable_grad() = dist::plain_alias(flat, at[dtype], p.sizes(), p.strides());
      at[dtype] += p.numel();
    }
  }
  void zero_static_grads() override {
    for (auto& f : flats_) f.zero_();
  }
  ParamSet attach(torch::nn::Module& model) override {
    params_ = dist::unique_parameters(model);
    return default_param_set(params_);
  }
  nlohmann::json report() const override { return {{"name", "none"}, {"world_size", 1}}; }

 private:
  std::vector<torch::Tensor> params_, flats_;
};
}  // namespace

EFFTRAIN_REGISTER(GradSync, "none", "no gradient communication (world size 1)",
                  [](const BuildContext& ctx) -> std::unique_ptr<GradSync> {
                    if (ctx.world_size > 1)
                      throw UserError("distributed.grad_sync: none cannot run with world size " +
                                      std::to_string(ctx.world_size) + "; use ddp or zero2");
                    return std::make_unique<NoSync>();
                  });

EFFTRAIN_REGISTER(GradSync, "auto", "none for one process, distributed.auto_sync (ddp or zero2) for more",
                  [](const BuildContext& ctx) -> std::unique_ptr<GradSync> {
                    return GradSyncRegistry::create(ctx.cfg.distributed.resolved_grad_sync(ctx.world_size), ctx);
                  });

}  // namespace efftrain

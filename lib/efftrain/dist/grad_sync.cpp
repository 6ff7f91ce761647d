// grad_sync none (one process) and auto (none, or distributed.auto_sync, by world size).
#include "efftrain/dist/grad_sync.h"

#include "efftrain/core/error.h"
#include "efftrain/dist/buckets.h"
#include "efftrain/engine/context.h"

namespace efftrain {

namespace {
class NoSync : public GradSync {
 public:
  ParamSet attach(torch::nn::Module& model) override {
    return default_param_set(dist::unique_parameters(model));
  }
  void before_backward(bool) override {}
  void finish() override {}
  nlohmann::json report() const override { return {{"name", "none"}, {"world_size", 1}}; }
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

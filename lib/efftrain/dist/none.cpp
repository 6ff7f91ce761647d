// grad_sync none: a single process, nothing to communicate.
#include "efftrain/dist/grad_sync.h"
#include "efftrain/core/error.h"
#include "efftrain/engine/context.h"

namespace efftrain {

namespace {
class NoSync : public GradSync {
 public:
  void attach(const std::vector<torch::Tensor>&) override {}
  void before_backward(bool) override {}
  void finish() override {}
  nlohmann::json report() const override { return {{"name", "none"}}; }
};
}  // namespace

EFFTRAIN_REGISTER(GradSync, "none", "no gradient communication (world size 1)",
                  [](const BuildContext& ctx) -> std::unique_ptr<GradSync> {
                    if (ctx.world_size > 1)
                      throw UserError("distributed.grad_sync: none cannot run with world size " +
                                      std::to_string(ctx.world_size) + "; use ddp or zero2");
                    return std::make_unique<NoSync>();
                  });

}  // namespace efftrain

// none (one micro-batch per step) and fixed(k) accumulation.
#include "efftrain/batching/accumulation.h"
#include "efftrain/engine/context.h"

namespace efftrain {

namespace {
class FixedK : public Accumulation {
 public:
  FixedK(std::string mode, int64_t k) : mode_(std::move(mode)), k_(k) {}
  int64_t next_k(int64_t) override { return k_; }
  nlohmann::json report() const override { return {{"mode", mode_}, {"k", k_}}; }

 private:
  std::string mode_;
  int64_t k_;
};
}  // namespace

EFFTRAIN_REGISTER(Accumulation, "none", "one micro-batch per optimizer step (the baseline)",
                  [](const BuildContext&) { return std::make_unique<FixedK>("none", 1); });
EFFTRAIN_REGISTER(Accumulation, "fixed", "accumulation.k micro-batches per optimizer step",
                  [](const BuildContext& ctx) {
                    return std::make_unique<FixedK>("fixed", ctx.cfg.accumulation.k);
                  });

}  // namespace efftrain

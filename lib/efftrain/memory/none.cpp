// checkpointing none: every activation is kept (the baseline).
#include "efftrain/engine/context.h"
#include "efftrain/memory/checkpointing.h"

namespace efftrain {

namespace {
class NoCheckpointing : public Checkpointing {
 public:
  std::vector<std::pair<int64_t, int64_t>> segments(int64_t) const override { return {}; }
  nlohmann::json report() const override { return {{"policy", "none"}, {"segments", nlohmann::json::array()}}; }
};
}  // namespace

EFFTRAIN_REGISTER(Checkpointing, "none", "keep every activation (the baseline)",
                  [](const BuildContext&) { return std::make_unique<NoCheckpointing>(); });

}  // namespace efftrain

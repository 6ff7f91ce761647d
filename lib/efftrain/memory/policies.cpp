// Checkpointing placements: sqrt (segments of ceil(sqrt(L)) blocks) and every(n).
#include <cmath>

#include "efftrain/engine/context.h"
#include "efftrain/memory/checkpointing.h"

namespace efftrain {

namespace {

class Segments : public Checkpointing {
 public:
  Segments(std::string policy, int64_t fixed_size) : policy_(std::move(policy)), fixed_(fixed_size) {}

  std::vector<std::pair<int64_t, int64_t>> segments(int64_t n) const override {
    const int64_t size = fixed_ > 0 ? fixed_ : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
    std::vector<std::pair<int64_t, int64_t>> out;
    for (int64_t start = 0; start < n; start += size) out.emplace_back(start, std::min(size, n - start));
    last_ = out;
    last_n_ = n;
    return out;
  }
  nlohmann::json report() const override {
    nlohmann::json segs = nlohmann::json::array();
    for (const auto& s : last_) segs.push_back({{"first_block", s.first}, {"blocks", s.second}});
    return {{"policy", policy_}, {"blocks", last_n_}, {"segments", segs}};
  }

 private:
  std::string policy_;
  int64_t fixed_;
  mutable std::vector<std::pair<int64_t, int64_t>> last_;
  mutable int64_t last_n_ = 0;
};

}  // namespace

EFFTRAIN_REGISTER(Checkpointing, "sqrt", "recompute every block, in segments of ceil(sqrt(L)) blocks",
                  [](const BuildContext&) { return std::make_unique<Segments>("sqrt", 0); });
EFFTRAIN_REGISTER(Checkpointing, "every", "recompute every block, in segments of checkpointing.every blocks",
                  [](const BuildContext& ctx) {
                    return std::make_unique<Segments>("every", ctx.cfg.checkpointing.every);
                  });

}  // namespace efftrain

// OnlinePolicy's accumulation decision over a run, on a scripted noise scale: kept at the first
// estimate, weighed again at each later one (the steps that bring one), frozen by the first
// that falls below one micro-step's batch, and never looked at after that.
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <optional>

#include "efftrain/engine/policy.h"

using namespace efftrain;

namespace {

class ScriptedNoise : public Accumulation {
 public:
  int64_t next_k(int64_t) override { return frozen_from ? 1 : 4; }
  std::optional<double> noise_scale() const override { return b_noise; }
  bool freeze(int64_t k, int64_t from_step) override {
    frozen_from = from_step;
    frozen_k = k;
    return true;
  }
  nlohmann::json report() const override { return {{"mode", "scripted"}}; }
  std::optional<double> b_noise;
  std::optional<int64_t> frozen_from;
  int64_t frozen_k = 0;
};

}  // namespace

TEST_CASE("policy auto keeps watching adaptive accumulation and freezes it at the first estimate below the batch") {
  config::ExperimentConfig cfg;
  cfg.policy.mode = "auto";
  cfg.policy.observe_steps = 3;
  cfg.accumulation.mode = "adaptive";
  cfg.accumulation.interval = 5;
  cfg.train.batch_size = 8;  // x 2 ranks: 16 samples per micro-step
  Components parts;
  auto noise = std::make_unique<ScriptedNoise>();
  auto* acc = noise.get();
  parts.accumulation = std::move(noise);
  OnlinePolicy policy(cfg, parts, torch::kCPU, {}, {}, /*world=*/2);
  int64_t collectives = 0;
  const auto all = [&](bool v) {
    ++collectives;
    return v;
  };
  auto step = [&](int64_t s, std::optional<double> bn) {
    acc->b_noise = bn;
    return policy.after_step(s, s, all);
  };
  CHECK_FALSE(step(1, 5.0));  // observing: nothing is weighed, not even a low estimate
  CHECK_FALSE(step(2, 5.0));
  CHECK(collectives == 0);
  acc->b_noise.reset();
  CHECK_FALSE(step(3, std::nullopt));  // no estimate yet
  CHECK_FALSE(step(4, std::nullopt));
  CHECK_FALSE(step(5, 40.0));  // the first estimate: above 16, kept
  auto decisions = policy.report()["decisions"];
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0]["action"] == "kept");
  CHECK(decisions[0]["step"] == 5);
  const int64_t at_decision = collectives;
  for (int64_t s = 6; s <= 9; ++s) CHECK_FALSE(step(s, 10.0));  // between estimates: not weighed
  CHECK(collectives == at_decision);
  CHECK_FALSE(step(10, 20.0));  // a later estimate, still above: kept silently
  CHECK(policy.report()["decisions"].size() == 1);
  CHECK(step(15, 12.0));  // below: frozen at k = 1 from the next step
  REQUIRE(acc->frozen_from);
  CHECK(*acc->frozen_from == 16);
  CHECK(acc->frozen_k == 1);
  decisions = policy.report()["decisions"];
  REQUIRE(decisions.size() == 2);
  CHECK(decisions[1]["action"] == "switched_off");
  CHECK(decisions[1]["step"] == 15);
  CHECK(decisions[1]["estimates_kept_before"] == 1);
  CHECK(decisions[1]["micro_batch_samples"] == 16);
  CHECK(policy.report()["accumulation_estimates_watched"] == 1);
  const int64_t at_freeze = collectives;
  CHECK_FALSE(step(20, 1.0));  // decided: never weighed again
  CHECK(collectives == at_freeze);
  CHECK(policy.report()["decisions"].size() == 2);
}

#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>

#include "efftrain/config/config.h"
#include "efftrain/engine/context.h"
#include "efftrain/optim/optimizer.h"

using namespace efftrain;
using Catch::Approx;

TEST_CASE("constant schedule returns optim.lr at every step") {
  config::ExperimentConfig cfg;
  cfg.optim.lr = 0.25;
  BuildContext ctx{cfg, torch::Device(torch::kCPU)};
  auto s = ScheduleRegistry::create("constant", ctx);
  CHECK(s->lr(1, 0) == 0.25);
  CHECK(s->lr(1000, 1 << 20) == 0.25);
}

TEST_CASE("warmup_cosine: warmup start and end, cosine midpoint and end (steps)") {
  config::ExperimentConfig cfg;
  cfg.optim.lr = 1.0;
  cfg.train.max_steps = 110;
  cfg.schedule.name = "warmup_cosine";
  cfg.schedule.warmup = 10;
  cfg.schedule.warmup_start_factor = 0.1;
  cfg.schedule.min_lr = 0.0;
  BuildContext ctx{cfg, torch::Device(torch::kCPU)};
  auto s = ScheduleRegistry::create("warmup_cosine", ctx);
  CHECK(s->lr(1, 0) == Approx(0.1));          // step 1: t=0, start of warmup
  CHECK(s->lr(6, 0) == Approx(0.55));         // halfway through warmup
  CHECK(s->lr(11, 0) == Approx(1.0));         // warmup done: peak
  CHECK(s->lr(61, 0) == Approx(0.5));         // cosine midpoint
  CHECK(s->lr(111, 0) == Approx(0.0).margin(1e-12));  // the end
  CHECK(s->lr(500, 0) == Approx(0.0).margin(1e-12));  // stays at min_lr
}

TEST_CASE("warmup_cosine in samples follows the samples seen, whatever the batch") {
  config::ExperimentConfig cfg;
  cfg.optim.lr = 2.0;
  cfg.schedule.name = "warmup_cosine";
  cfg.schedule.unit = "samples";
  cfg.schedule.warmup = 1000;
  cfg.schedule.total = 3000;
  cfg.schedule.min_lr = 0.2;
  BuildContext ctx{cfg, torch::Device(torch::kCPU)};
  auto s = ScheduleRegistry::create("warmup_cosine", ctx);
  CHECK(s->lr(3, 500) == Approx(1.0));
  CHECK(s->lr(99, 500) == Approx(1.0));  // the step number does not matter
  CHECK(s->lr(5, 2000) == Approx(1.1));  // cosine midpoint: (2.0 + 0.2) / 2
  CHECK(s->lr(9, 3000) == Approx(0.2));
}

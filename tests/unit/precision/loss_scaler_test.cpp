#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <sstream>

#include "efftrain/precision/loss_scaler.h"

using namespace efftrain;

namespace {
config::PrecisionConfig knobs(int64_t window, int64_t hysteresis, double min_scale, int64_t power = 4) {
  config::PrecisionConfig c;
  c.initial_scale_power = power;
  c.loss_scale_window = window;
  c.hysteresis = hysteresis;
  c.min_loss_scale = min_scale;
  return c;
}
// One step: a gradient that is finite or not, unscaled and checked, then the update.
bool step(LossScaler& s, bool overflow) {
  auto g = torch::full({3}, 8.0f);
  if (overflow) g[1] = std::numeric_limits<float>::infinity();
  auto inf = s.unscale_and_check({g});
  const bool found = inf.item<float>() != 0.f;
  s.update();
  return found;
}
}  // namespace

TEST_CASE("loss scaler: starts at 2^power, unscales, doubles after the window of clean steps") {
  LossScaler s(knobs(/*window=*/3, /*hysteresis=*/1, 1.0), torch::kCPU);
  CHECK(s.current_scale() == 16.0);
  auto g = torch::full({2}, 32.0f);
  CHECK(s.unscale_and_check({g}).item<float>() == 0.f);
  CHECK(g[0].item<float>() == 2.0f);  // 32 / 16
  s.update();
  CHECK(s.current_scale() == 16.0);
  step(s, false);
  CHECK(s.current_scale() == 16.0);
  step(s, false);  // third clean step
  CHECK(s.current_scale() == 32.0);
  for (int i = 0; i < 3; ++i) step(s, false);
  CHECK(s.current_scale() == 64.0);
}

TEST_CASE("loss scaler: an overflow is found, skipped and halves the scale; the window restarts") {
  LossScaler s(knobs(3, 1, 1.0), torch::kCPU);
  CHECK(step(s, true));
  CHECK(s.current_scale() == 8.0);
  CHECK(s.overflows() == 1);
  step(s, false);
  step(s, false);
  CHECK(s.current_scale() == 8.0);  // only 2 clean steps since the overflow
  step(s, false);
  CHECK(s.current_scale() == 16.0);
}

TEST_CASE("loss scaler: hysteresis absorbs overflows before backing off, reset at growth") {
  LossScaler s(knobs(2, /*hysteresis=*/3, 1.0), torch::kCPU);
  step(s, true);
  step(s, true);
  CHECK(s.current_scale() == 16.0);  // two overflows absorbed
  step(s, true);
  CHECK(s.current_scale() == 8.0);  // the third backs off
  step(s, true);
  CHECK(s.current_scale() == 4.0);  // and each further one until a growth
  step(s, false);
  step(s, false);
  CHECK(s.current_scale() == 8.0);  // growth restores the hysteresis
  step(s, true);
  CHECK(s.current_scale() == 8.0);
  CHECK(s.overflows() == 5);
}

TEST_CASE("loss scaler: the scale stops at its floor and counts overflows there") {
  LossScaler s(knobs(100, 1, /*min_scale=*/2.0, /*power=*/2), torch::kCPU);
  step(s, true);
  CHECK(s.current_scale() == 2.0);
  CHECK(s.overflows_at_min_scale() == 0);
  step(s, true);
  step(s, true);
  CHECK(s.current_scale() == 2.0);
  CHECK(s.overflows_at_min_scale() == 2);
  step(s, false);
  CHECK(s.overflows_at_min_scale() == 0);  // a clean step ends the streak
}

TEST_CASE("loss scaler: NaN counts as an overflow") {
  LossScaler s(knobs(10, 1, 1.0), torch::kCPU);
  auto g = torch::ones({4});
  g[2] = std::numeric_limits<float>::quiet_NaN();
  CHECK(s.unscale_and_check({g}).item<float>() == 1.f);
}

TEST_CASE("loss scaler: saved mid-window and mid-hysteresis, a loaded copy continues identically") {
  const auto cfg = knobs(/*window=*/4, /*hysteresis=*/2, 1.0);
  LossScaler a(cfg, torch::kCPU);
  const std::vector<bool> before = {false, false, false, false, true, false, false, true, false};
  for (bool o : before) step(a, o);
  torch::serialize::OutputArchive out;
  a.save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  LossScaler b(cfg, torch::kCPU);  // a fresh scaler: scale 16, no counters
  torch::serialize::InputArchive in;
  std::istringstream is(bytes.str());
  in.load_from(is);
  b.load(in);
  CHECK(b.current_scale() == a.current_scale());
  CHECK(b.overflows() == a.overflows());
  const std::vector<bool> after = {false, false, true, true, false, false, false, false, true, false};
  for (bool o : after) {
    CHECK(step(a, o) == step(b, o));
    CHECK(a.current_scale() == b.current_scale());
  }
  CHECK(a.overflows() == b.overflows());
  LossScaler fresh(cfg, torch::kCPU);
  for (bool o : after) step(fresh, o);
  CHECK(fresh.current_scale() != a.current_scale());  // the state did matter
}

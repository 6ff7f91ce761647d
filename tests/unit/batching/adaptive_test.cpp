#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/batching/accumulation.h"
#include "efftrain/batching/noise_scale.h"
#include "efftrain/config/config.h"
#include "efftrain/engine/context.h"

using namespace efftrain;

namespace {
// Least squares with controlled gradient noise: per-example loss 0.5 |w - x|^2 with
// x ~ N(mu, sigma^2 I) in d dimensions, at w = 0: G = -mu, Sigma = sigma^2 I, so
// B_noise = d sigma^2 / |mu|^2.
struct Problem {
  int64_t d = 50;
  double sigma2 = 0.2;
  torch::Tensor mu = torch::full({50}, 1.0 / std::sqrt(50.0), torch::kDouble);  // |mu|^2 = 1
  double b_noise() const { return d * sigma2 / mu.pow(2).sum().item<double>(); }
  // Gradient of a micro-batch of b examples: mean of (w - x_i).
  torch::Tensor micro_grad(int64_t b, torch::Generator& gen) const {
    auto x = mu.view({1, d}) + std::sqrt(sigma2) * torch::randn({b, d}, gen, torch::kDouble);
    return (-x).mean(0).to(torch::kFloat);
  }
};

// Runs `steps` optimizer steps of the accumulation component on the problem (w is not
// updated: the true B_noise stays fixed). Returns the k used at each step.
std::vector<int64_t> drive(Accumulation& acc, const Problem& p, int64_t b, int64_t steps, int64_t first_step,
                           torch::Generator& gen) {
  auto w = torch::zeros({p.d}, torch::requires_grad());
  std::vector<int64_t> ks;
  for (int64_t s = first_step; s < first_step + steps; ++s) {
    const int64_t k = acc.next_k(s);
    ks.push_back(k);
    w.mutable_grad() = torch::zeros({p.d});
    for (int64_t i = 0; i < k; ++i) {
      w.mutable_grad().add_(p.micro_grad(b, gen) / static_cast<double>(k));
      acc.after_backward(i, k, {w}, {});
    }
    acc.after_step(s, {});
  }
  return ks;
}

std::unique_ptr<Accumulation> make_adaptive(config::ExperimentConfig& cfg) {
  cfg.accumulation.mode = "adaptive";
  BuildContext ctx{cfg, torch::Device(torch::kCPU)};
  return AccumulationRegistry::create("adaptive", ctx);
}
}  // namespace

TEST_CASE("the noise-scale estimator converges to the analytic B_noise within 20%") {
  Problem p;
  auto gen = at::detail::createCPUGenerator(8);
  NoiseScaleEstimator est(0.99, torch::kCPU);
  const int64_t b = 4, k = 4;
  for (int step = 0; step < 2000; ++step) {
    auto sum = torch::zeros({p.d});
    torch::Tensor first;
    for (int i = 0; i < k; ++i) {
      auto g = p.micro_grad(b, gen);
      if (i == 0) first = g;
      sum += g;
    }
    est.observe(first.pow(2).sum(), b, (sum / k).pow(2).sum(), b * k);
  }
  INFO("estimate " << est.b_noise() << " analytic " << p.b_noise());
  CHECK(std::abs(est.b_noise() - p.b_noise()) < 0.2 * p.b_noise());
  CHECK(std::abs(est.g2() - 1.0) < 0.2);
  CHECK(std::abs(est.trace_sigma() - p.d * p.sigma2) < 0.2 * p.d * p.sigma2);
}

TEST_CASE("the estimator ignores skipped (overflowed) observations") {
  NoiseScaleEstimator est(0.9, torch::kCPU);
  est.observe(torch::tensor(3.0), 2, torch::tensor(2.0), 8, torch::tensor(true));
  const double bn = est.b_noise();
  est.observe(torch::tensor(300.0), 2, torch::tensor(1.0), 8, torch::tensor(false));
  est.observe(torch::tensor(std::numeric_limits<double>::infinity()), 2, torch::tensor(1.0), 8);
  CHECK(est.b_noise() == bn);
  CHECK(est.observations() == 1);
}

TEST_CASE("adaptive k tracks B_noise: rises with the noise, falls with it, within bounds, no flapping") {
  config::ExperimentConfig cfg;
  cfg.train.batch_size = 4;
  cfg.accumulation.k = 2;
  cfg.accumulation.k_min = 1;
  cfg.accumulation.k_max = 16;
  cfg.accumulation.interval = 10;
  cfg.accumulation.ema = 0.98;
  auto acc = make_adaptive(cfg);
  auto gen = at::detail::createCPUGenerator(8);
  Problem p;
  p.sigma2 = 1.6;  // B_noise = 80: k = 80 / 4 = 20, clamped to k_max
  auto ks = drive(*acc, p, 4, 300, 1, gen);
  CHECK(ks.front() == 2);
  CHECK(ks.back() == 16);
  p.sigma2 = 0.24;  // B_noise = 12: k = 12 / 4 = 3
  ks = drive(*acc, p, 4, 400, 301, gen);
  CHECK(ks.back() == 3);
  int changes = 0;
  for (size_t i = 200; i < ks.size(); ++i) changes += ks[i] != ks[i - 1];
  CHECK(changes <= 1);  // settled: the hysteresis band keeps k from flapping
  for (auto k : ks) CHECK((k >= 2 && k <= 16));  // one process: k >= 2 to estimate
  const auto r = acc->report();
  CHECK(r["k_history"].size() >= 3);
  CHECK(r["noise_history"].size() >= 60);
}

TEST_CASE("learning-rate responses to a batch change") {
  config::ExperimentConfig cfg;
  cfg.train.batch_size = 4;
  cfg.accumulation.k = 2;
  cfg.accumulation.k_max = 8;
  cfg.accumulation.interval = 5;
  for (const std::string response : {"none", "sqrt", "linear", "adascale"}) {
    cfg.accumulation.lr_response = response;
    auto acc = make_adaptive(cfg);
    auto gen = at::detail::createCPUGenerator(8);
    Problem p;
    p.sigma2 = 1.6;  // pushes k to 8 = 4 x the starting 2
    drive(*acc, p, 4, 200, 1, gen);
    REQUIRE(acc->next_k(201) == 8);
    const double s = acc->lr_scale();
    if (response == "none") CHECK(s == 1.0);
    if (response == "sqrt") CHECK(std::abs(s - 2.0) < 1e-12);
    if (response == "linear") CHECK(std::abs(s - 4.0) < 1e-12);
    if (response == "adascale") CHECK((s > 1.0 && s < 4.0));  // between no gain and linear
  }
}

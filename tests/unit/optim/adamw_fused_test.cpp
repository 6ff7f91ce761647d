#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/config/config.h"
#include "efftrain/engine/context.h"
#include "efftrain/optim/optimizer.h"
#include "efftrain/core/error.h"
#include "model_files.h"
#include "helpers.h"

using namespace efftrain;
using efftrain::test::relative_error;

TEST_CASE("adamw_fused matches torch::optim::AdamW with the same groups over 20 steps") {
  config::ExperimentConfig cfg;
  cfg.optim.lr = 1e-2;
  cfg.optim.weight_decay = 0.1;
  BuildContext ctx{cfg, torch::Device(torch::kCPU)};
  torch::manual_seed(0);
  auto w = torch::randn({8, 5}, torch::kDouble).to(torch::kFloat), b = torch::randn({5});
  auto w1 = w.clone().requires_grad_(), b1 = b.clone().requires_grad_();
  auto w2 = w.clone().requires_grad_(), b2 = b.clone().requires_grad_();
  auto fused = OptimizerRegistry::create("adamw_fused", ctx);
  fused->attach(default_param_set({w1, b1}));
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{w2}, std::make_unique<torch::optim::AdamWOptions>(
                                                          torch::optim::AdamWOptions(1e-2).weight_decay(0.1)));
  groups.emplace_back(std::vector<torch::Tensor>{b2}, std::make_unique<torch::optim::AdamWOptions>(
                                                          torch::optim::AdamWOptions(1e-2).weight_decay(0.0)));
  torch::optim::AdamW ref(std::move(groups));
  for (int step = 0; step < 20; ++step) {
    auto gw = torch::randn({8, 5}), gb = torch::randn({5});
    w1.mutable_grad() = gw.clone();
    b1.mutable_grad() = gb.clone();
    w2.mutable_grad() = gw.clone();
    b2.mutable_grad() = gb.clone();
    fused->step(1e-2, torch::zeros({}));
    ref.step();
  }
  CHECK(relative_error(w1, w2) < 1e-6);  // decay group
  CHECK(relative_error(b1, b2) < 1e-6);  // no-decay group
  CHECK(fused->state_bytes() == (40 + 40 + 5 + 5) * 4 + 2 * 4);
}

TEST_CASE("adamw_fused: a step with found-inf set changes nothing, step count included") {
  config::ExperimentConfig cfg;
  BuildContext ctx{cfg, torch::Device(torch::kCPU)};
  torch::manual_seed(1);
  const auto init = torch::randn({4, 4});
  const auto g1 = torch::randn({4, 4}), g_bad = torch::randn({4, 4}), g3 = torch::randn({4, 4});
  auto p = init.clone().requires_grad_(), q = init.clone().requires_grad_();
  auto skipping = OptimizerRegistry::create("adamw_fused", ctx), clean = OptimizerRegistry::create("adamw_fused", ctx);
  skipping->attach(default_param_set({p}));
  clean->attach(default_param_set({q}));
  p.mutable_grad() = g1.clone();
  q.mutable_grad() = g1.clone();
  skipping->step(1e-2, torch::zeros({}));
  clean->step(1e-2, torch::zeros({}));
  const auto before = p.detach().clone();
  p.mutable_grad() = g_bad.clone();
  skipping->step(1e-2, torch::ones({}));  // overflow: skipped on the device
  CHECK(torch::equal(p.detach(), before));
  // Moments and step count were untouched: the next clean step matches a run that never skipped.
  p.mutable_grad() = g3.clone();
  q.mutable_grad() = g3.clone();
  skipping->step(1e-2, torch::zeros({}));
  clean->step(1e-2, torch::zeros({}));
  CHECK(torch::equal(p.detach(), q.detach()));
}

TEST_CASE("both optimizers save and load their state: a restored optimizer continues identically") {
  for (const std::string name : {"adamw", "adamw_fused"}) {
    config::ExperimentConfig cfg;
    BuildContext ctx{cfg, torch::Device(torch::kCPU)};
    test::TempDir d;
    torch::manual_seed(2);
    const auto init = torch::randn({6, 3});
    auto p = init.clone().requires_grad_(), q = torch::zeros({6, 3}).requires_grad_();
    auto a = OptimizerRegistry::create(name, ctx), b = OptimizerRegistry::create(name, ctx);
    a->attach(default_param_set({p}));
    b->attach(default_param_set({q}));
    std::vector<torch::Tensor> grads;
    for (int i = 0; i < 10; ++i) grads.push_back(torch::randn({6, 3}));
    for (int i = 0; i < 5; ++i) {
      p.mutable_grad() = grads[i].clone();
      a->step(1e-2, torch::zeros({}));
    }
    a->save(d.file("opt.pt"));
    {
      torch::NoGradGuard ng;
      q.copy_(p);
    }
    b->load(d.file("opt.pt"));
    for (int i = 5; i < 10; ++i) {
      p.mutable_grad() = grads[i].clone();
      q.mutable_grad() = grads[i].clone();
      a->step(1e-2, torch::zeros({}));
      b->step(1e-2, torch::zeros({}));
    }
    INFO(name);
    CHECK(torch::equal(p.detach(), q.detach()));
    d.write("bad.pt", "not a torch archive");
    CHECK_THROWS_AS(b->load(d.file("bad.pt")), UserError);
  }
}

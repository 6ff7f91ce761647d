// ddp and zero2 measure each rank's own accumulated gradient as they send it (the noise
// estimate of adaptive k needs it, and the sync overwrites it): two ranks in one process over
// Gloo, each compared with the squared norm of the same gradient on a copy of its model.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <torch/torch.h>

#include <cmath>
#include <future>

#include "efftrain/config/config.h"
#include "efftrain/dist/comm.h"
#include "efftrain/dist/grad_sync.h"
#include "efftrain/dist/launcher.h"
#include "efftrain/engine/context.h"

using namespace efftrain;

namespace {

struct Net : torch::nn::Module {
  Net() {
    a = register_module("a", torch::nn::Linear(8, 16));
    b = register_module("b", torch::nn::Linear(16, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return b(torch::tanh(a(x))); }
  torch::nn::Linear a{nullptr}, b{nullptr};
};

// How the micro-batch that communicates runs: the hooks send the buckets (eager steps), static
// gradients sent after backward (graph off), static gradients with the hooks armed (what a
// captured graph records).
enum class Flow { kEager, kStaticAfter, kStaticHooks };

struct Measured {
  double measured, reference;
};

// Two optimizer steps of k = 2 micro-batches on this rank's own data.
std::vector<Measured> run_rank(int rank, int port, const std::string& name, Flow flow) {
  dist::WorkerEnv env;
  env.rank = rank;
  env.world_size = env.local_world_size = 2;
  env.master_port = port;
  auto comm = dist::Comm::connect(env, torch::Device(torch::kCPU), "gloo", 60);
  config::ExperimentConfig cfg;
  cfg.distributed.bucket_mb = 256.0 / (1024 * 1024);  // 256 bytes: several buckets
  BuildContext ctx{cfg, torch::Device(torch::kCPU), rank, 2, comm};
  auto sync = GradSyncRegistry::create(name, ctx);
  auto net = std::make_shared<Net>();
  sync->attach(*net);
  sync->measure_local_norm();
  // The reference: the same micro-batches on a copy of the model that no sync touches (the
  // synced .grads may already be divided and reduced when backward ends).
  auto copy = std::make_shared<Net>();
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < copy->parameters().size(); ++i) copy->parameters()[i].copy_(net->parameters()[i]);
  }
  const bool is_static = flow != Flow::kEager;
  if (is_static) sync->use_static_grads();
  auto gen = at::detail::createCPUGenerator(100 + rank);
  std::vector<Measured> out;
  const int k = 2;
  for (int step = 0; step < 2; ++step) {
    if (is_static) sync->zero_static_grads();
    else
      for (auto& p : net->parameters()) p.mutable_grad().reset();
    for (auto& p : copy->parameters()) p.mutable_grad().reset();
    for (int i = 0; i < k; ++i) {
      const auto x = torch::randn({4, 8}, gen);
      if (flow != Flow::kStaticAfter) sync->before_backward(/*last=*/i == k - 1);
      (net->forward(x).pow(2).mean() / k).backward();
      (copy->forward(x).pow(2).mean() / k).backward();
    }
    sync->finish();
    double reference = 0;
    for (const auto& p : copy->parameters()) reference += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
    out.push_back({sync->local_sq_norm().item<double>(), reference});
  }
  return out;
}

}  // namespace

TEST_CASE("ddp and zero2 measure each rank's own accumulated gradient norm as they send the buckets") {
  const auto name = GENERATE(std::string("ddp"), std::string("zero2"));
  const auto flow = GENERATE(Flow::kEager, Flow::kStaticAfter, Flow::kStaticHooks);
  INFO(name << ", flow " << static_cast<int>(flow));
  const int port = dist::free_port();
  auto r0 = std::async(std::launch::async, run_rank, 0, port, name, flow);
  auto r1 = std::async(std::launch::async, run_rank, 1, port, name, flow);
  const auto ranks = std::vector<std::vector<Measured>>{r0.get(), r1.get()};
  for (const auto& steps : ranks) {
    REQUIRE(steps.size() == 2);
    for (const auto& m : steps) {
      INFO("measured " << m.measured << ", reference " << m.reference);
      CHECK(m.reference > 0);
      CHECK(std::abs(m.measured - m.reference) <= 1e-9 * m.reference);
    }
  }
  // The ranks saw different data: a rank-averaged or global norm would not match both.
  CHECK(std::abs(ranks[0][0].reference - ranks[1][0].reference) > 1e-6 * ranks[0][0].reference);
}

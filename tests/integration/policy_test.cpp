// policy.mode auto, online (issue 9): activation checkpointing is switched off when the measured
// peak would fit the memory budget without it, and kept when the budget needs it. CPU, a small
// GPT, memory as the bytes of CPU tensors (metrics::track_cpu_memory).
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "efftrain/metrics/device.h"
#include "helpers.h"

using namespace efftrain;
using namespace efftrain::test;

namespace {

nlohmann::json run_report(const std::string& args) {
  TempDir d;
  const auto r = run_efftrain(args + " --out '" + d.file("run") + "'");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(read_text(d.file("run/report.json")));
}

int64_t peak(const nlohmann::json& j) { return j["memory"]["peak_allocated_bytes"].get<int64_t>(); }

// Four layers (sqrt: two segments of two), long enough sequences that activations dominate.
const std::string kGpt = "run experiments/smoke/wikitext2_gpt_tiny.yaml --set task.model.depth=4 "
                         "--set task.model.width=64 --set task.model.context=128 --set task.data.seq_len=128 "
                         "--set train.batch_size=16 --set train.max_steps=8 --set train.eval_every=0";

}  // namespace

TEST_CASE("on the CPU, allocated memory is the bytes of live CPU tensors, with a resettable peak") {
  const torch::Device cpu(torch::kCPU);
  metrics::track_cpu_memory();
  metrics::track_cpu_memory();  // idempotent
  const int64_t before = metrics::current_allocated(cpu);
  metrics::reset_peak_memory(cpu);
  {
    auto t = torch::empty({1000}, torch::kFloat);
    CHECK(metrics::current_allocated(cpu) == before + 4000);
    t.fill_(1);
    CHECK(t.sum().item<float>() == 1000.f);
  }
  CHECK(metrics::current_allocated(cpu) == before);
  const auto m = metrics::peak_memory(cpu);
  CHECK(m.source == "cpu_tensor_allocator");
  CHECK(m.allocated >= before + 4000);
  metrics::reset_peak_memory(cpu);
  CHECK(metrics::peak_memory(cpu).allocated == before);
}

TEST_CASE("policy auto switches checkpointing off when memory is ample and keeps it when the budget needs it") {
  const auto plain = run_report(kGpt);
  const auto fixed = run_report(kGpt + " --set checkpointing.policy=sqrt");
  CHECK(plain["memory"]["source"] == "cpu_tensor_allocator");
  REQUIRE(peak(fixed) < peak(plain));  // recomputation saves memory here
  CHECK(fixed["optimizations"]["policy"]["mode"] == "none");

  const std::string policy = kGpt + " --set checkpointing.policy=sqrt --set policy.mode=auto --set policy.observe_steps=3";
  const auto ample = run_report(policy + " --set policy.memory_budget_bytes=8000000000");
  const auto& pa = ample["optimizations"]["policy"];
  INFO(pa.dump());
  REQUIRE(pa["decisions"].size() == 1);
  const auto& d = pa["decisions"][0];
  CHECK(d["component"] == "checkpointing");
  CHECK(d["action"] == "switched_off");
  CHECK(d["step"] == 3);
  CHECK(d["block_activation_bytes_with"].get<int64_t>() < d["block_activation_bytes_without"].get<int64_t>());
  CHECK(d["estimated_peak_without_bytes"].get<int64_t>() > d["measured_peak_bytes"].get<int64_t>());
  CHECK(d["recompute_forward_flops_per_sample"].get<double>() > 0);
  CHECK(pa["checkpointing_segments_at_end"].empty());
  // From step 4 on the blocks keep their activations: the run's peak is the plain run's.
  CHECK(peak(ample) > peak(fixed));
  CHECK(std::abs(peak(ample) - peak(plain)) <= peak(plain) / 50);

  // A budget between the peak with recomputation and the estimate without it.
  const int64_t usable = (d["measured_peak_bytes"].get<int64_t>() + d["estimated_peak_without_bytes"].get<int64_t>()) / 2;
  const auto tight = run_report(policy + " --set policy.memory_budget_bytes=" + std::to_string(usable * 10 / 9));
  const auto& pt = tight["optimizations"]["policy"];
  INFO(pt.dump());
  REQUIRE(pt["decisions"].size() == 1);
  CHECK(pt["decisions"][0]["action"] == "kept");
  CHECK(pt["checkpointing_segments_at_end"].size() == 2);
  CHECK(std::abs(peak(tight) - peak(fixed)) <= peak(fixed) / 50);
}

TEST_CASE("policy auto decides the same on every rank (2 processes, ddp)") {
  const auto two = run_report(kGpt + " --set train.batch_size=8 --nproc 2 --set checkpointing.policy=sqrt "
                                     "--set policy.mode=auto --set policy.memory_budget_bytes=8000000000");
  const auto& p = two["optimizations"]["policy"];
  INFO(p.dump());
  REQUIRE(p["decisions"].size() == 1);
  CHECK(p["decisions"][0]["action"] == "switched_off");
  CHECK(two["status"] == "completed");
}

TEST_CASE("policy auto freezes adaptive k at 1 when the noise scale is below the micro-batch, and keeps it otherwise") {
  // The tiny GPT on synthetic text: B_noise of a few samples against 16 per micro-step.
  const std::string adaptive = " --set accumulation.mode=adaptive --set accumulation.interval=5 --set policy.mode=auto "
                               "--set policy.observe_steps=3 --set train.max_steps=20";
  const auto low = run_report("run experiments/smoke/wikitext2_gpt_tiny.yaml" + adaptive);
  const auto& pl = low["optimizations"]["policy"];
  INFO(pl.dump());
  REQUIRE(pl["decisions"].size() == 1);
  const auto& d = pl["decisions"][0];
  CHECK(d["component"] == "accumulation");
  CHECK(d["step"] == 5);  // the first estimate comes at the first interval, after observe_steps
  CHECK(d["b_noise"].get<double>() < 16.0);
  CHECK(d["micro_batch_samples"] == 16);
  CHECK(d["action"] == "switched_off");
  const auto& a = low["optimizations"]["accumulation"];
  CHECK(a["k"] == 1);
  CHECK(a["frozen_by_policy"]["step"] == 6);
  CHECK(a["noise_history"].size() == 1);  // no estimates after the freeze
  // steps 1-5 at k = 2 (the single-process minimum for an estimate), 6-20 at k = 1
  CHECK(low["result"]["samples"] == (5 * 2 + 15) * 16);

  // The quickstart CNN: B_noise above a hundred samples against 64 per micro-step.
  const auto high = run_report("run experiments/quickstart.yaml" + adaptive);
  const auto& ph = high["optimizations"]["policy"];
  INFO(ph.dump());
  REQUIRE(ph["decisions"].size() == 1);
  CHECK(ph["decisions"][0]["action"] == "kept");
  CHECK(ph["decisions"][0]["b_noise"].get<double>() >= 64.0);
  CHECK(high["optimizations"]["accumulation"]["frozen_by_policy"].is_null());
  CHECK(high["optimizations"]["accumulation"]["noise_history"].size() == 4);
}

TEST_CASE("policy auto runs none where zero2 or ddp was asked for one process, and says so") {
  const std::string one = "run experiments/quickstart.yaml --set train.max_steps=3 --set train.eval_every=0";
  for (const char* sync : {"zero2", "ddp"}) {
    INFO(sync);
    TempDir d;
    const auto refused = run_efftrain(one + " --set distributed.grad_sync=" + sync + " --out '" + d.file("run") + "'");
    CHECK(refused.exit_code == 2);  // without the policy: the config asks for what cannot run
    CHECK(refused.err.find("needs more than one process") != std::string::npos);
    const auto j = run_report(one + " --set distributed.grad_sync=" + sync + " --set policy.mode=auto");
    CHECK(j["optimizations"]["grad_sync"]["name"] == "none");
    const auto& p = j["optimizations"]["policy"];
    INFO(p.dump());
    REQUIRE(p["decisions"].size() == 1);
    CHECK(p["decisions"][0]["component"] == "grad_sync");
    CHECK(p["decisions"][0]["asked"] == sync);
    CHECK(p["decisions"][0]["action"] == "switched_off");
    CHECK(p["decisions"][0]["step"] == 0);
  }
  // with two processes zero2 stays
  const auto two = run_report(one + " --set distributed.grad_sync=zero2 --set policy.mode=auto --nproc 2");
  CHECK(two["optimizations"]["grad_sync"]["name"] == "zero2");
  CHECK(two["optimizations"]["policy"]["decisions"].empty());
}

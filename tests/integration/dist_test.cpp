// Multi-process training on the CPU (Gloo), through the efftrain binary and its launcher:
// ddp equals one process with the same global batch, zero2 equals ddp with 1/N of the
// optimizer state per rank, and a failing or missing worker ends the job without hanging.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "helpers.h"
#include "model_files.h"

using namespace efftrain::test;

namespace {

struct Run {
  nlohmann::json report;
  std::map<std::string, torch::Tensor> params;
};

Run train(const std::string& args) {
  TempDir d;
  const auto r = run_efftrain(args + " --set output.save_model=true --out '" + d.file("run") + "'");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  return {nlohmann::json::parse(read_text(d.file("run/report.json"))), load_tensors(d.file("run/model.pt"))};
}

// AdamW's first steps move each element by about lr * sign(gradient); an element whose
// gradient is ~0 can flip sign on a last-bit difference in the summation order. eps = 1 makes
// the update proportional to the gradient, so these comparisons see the communication, not
// that amplification.
const std::string kExact = " --set optim.eps=1.0 --set optim.lr=0.3 --set train.eval_every=0 --set train.max_steps=10";
const std::string kCnn = "run experiments/quickstart.yaml --device cpu --set task.model.norm=none" + kExact;
const std::string kGpt = "run experiments/smoke/wikitext2_gpt_tiny.yaml" + kExact;

std::string batch(int global, int nproc) { return " --set train.batch_size=" + std::to_string(global / nproc); }

// A 2-process quickstart run into out/run with EFFTRAIN_FAULT=`fault`, and how long it took.
struct FaultRun {
  CommandResult result;
  double seconds;
};
FaultRun run_with_fault(const TempDir& out, const std::string& settings, const std::string& fault) {
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_efftrain("run experiments/quickstart.yaml --device cpu --nproc 2 " + settings + " --out '" +
                            out.file("run") + "'",
                        EFFTRAIN_SOURCE_DIR, "EFFTRAIN_FAULT=" + fault);
  return {r, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

}  // namespace

TEST_CASE("ddp over 2 and 3 processes equals one process with the same global batch (tiny CNN)") {
  const auto one = train(kCnn + batch(96, 1));
  CHECK(one.report["optimizations"]["grad_sync"]["name"] == "none");
  for (int n : {2, 3}) {
    const auto many = train(kCnn + batch(96, n) + " --nproc " + std::to_string(n));
    const auto& sync = many.report["optimizations"]["grad_sync"];
    CHECK(sync["name"] == "ddp");  // grad_sync auto
    CHECK(sync["world_size"] == n);
    CHECK(sync["backend"] == "gloo");
    CHECK(many.report["result"]["samples"] == one.report["result"]["samples"]);
    CHECK(many.report["ranks"].size() == static_cast<size_t>(n));
    const double diff = relative_difference(one.params, many.params);
    INFO("processes " << n << ", relative difference " << diff);
    CHECK(diff < 1e-6);
    CHECK(relative_difference(one.params, train(kCnn + batch(96, 1)).params) == 0.0);  // runs repeat exactly
  }
}

TEST_CASE("ddp over 2 and 3 processes equals one process with the same global batch (tiny GPT)") {
  const auto one = train(kGpt + batch(12, 1) + " --set optim.name=adamw_fused");
  for (int n : {2, 3}) {
    const auto many = train(kGpt + batch(12, n) + " --set optim.name=adamw_fused --nproc " + std::to_string(n));
    const double diff = relative_difference(one.params, many.params);
    INFO("processes " << n << ", relative difference " << diff);
    CHECK(diff < 1e-6);
  }
}

TEST_CASE("zero2 equals ddp and holds 1/N of the optimizer state per rank") {
  const int n = GENERATE(2, 3, 4);  // 4: issue 11's world size, on the CPU
  for (const char* opt : {"adamw", "adamw_fused"}) {
    INFO("optimizer " << opt << ", processes " << n);
    const std::string common = kGpt + batch(12, n) + " --nproc " + std::to_string(n) + " --set optim.name=" + opt +
                               " --set distributed.bucket_mb=0.02";
    const auto ddp = train(common + " --set distributed.grad_sync=ddp");
    const auto zero = train(common + " --set distributed.grad_sync=zero2");
    CHECK(zero.report["optimizations"]["grad_sync"]["name"] == "zero2");
    const double diff = relative_difference(ddp.params, zero.params);
    INFO("relative difference " << diff);
    CHECK(diff < 1e-6);
    const auto& ranks = zero.report["ranks"];
    REQUIRE(ranks.size() == static_cast<size_t>(n));
    const double full = ddp.report["ranks"][0]["optimizer_state_bytes"].get<double>();
    const double bucket = 0.02 * 1024 * 1024 * 2;  // one bucket of both moments
    for (const auto& r : ranks) {
      const double mine = r["optimizer_state_bytes"].get<double>();
      INFO("rank " << r["rank"] << ": " << mine << " bytes of " << full);
      CHECK(std::abs(mine - full / n) <= bucket);
      CHECK(mine < 0.6 * full);
    }
  }
}

TEST_CASE("distributed.comm_dtype bf16 and fp16 send halved buckets: ddp and zero2 stay within their rounding") {
  const std::string common = kGpt + batch(12, 2) + " --nproc 2 --set optim.name=adamw_fused --set distributed.bucket_mb=0.02";
  for (const char* sync : {"ddp", "zero2"}) {
    const auto exact = train(common + " --set distributed.grad_sync=" + sync);
    CHECK(exact.report["optimizations"]["grad_sync"]["comm_dtype"] == "the gradients' own");
    for (const char* dtype : {"bf16", "fp16"}) {
      INFO(sync << " " << dtype);
      const auto half = train(common + " --set distributed.grad_sync=" + sync + " --set distributed.comm_dtype=" + dtype);
      CHECK(half.report["optimizations"]["grad_sync"]["comm_dtype"] == (std::string(dtype) == "bf16" ? "BFloat16" : "Half"));
      const double diff = relative_difference(exact.params, half.params);
      INFO("relative difference " << diff);
      // the averaged gradient rounded to 8 (bf16) or 11 (fp16) significant bits, ten steps of
      // an update proportional to it (eps = 1): well below a percent, and not zero
      CHECK(diff > 0);
      CHECK(diff < 1e-2);
    }
  }
}

TEST_CASE("gradient clipping by global norm is the same under zero2 (norm summed over shards) as under ddp") {
  const std::string common = kGpt + batch(12, 2) + " --nproc 2 --set optim.name=adamw_fused --set optim.grad_clip=0.05";
  const auto ddp = train(common + " --set distributed.grad_sync=ddp");
  const auto zero = train(common + " --set distributed.grad_sync=zero2");
  const auto unclipped = train(kGpt + batch(12, 2) + " --nproc 2 --set optim.name=adamw_fused");
  CHECK(relative_difference(ddp.params, zero.params) < 1e-6);
  CHECK(relative_difference(ddp.params, unclipped.params) > 1e-4);  // the clip did act
}

TEST_CASE("with gradient accumulation only the last micro-batch communicates, and ddp stays exact") {
  const auto one = train(kCnn + batch(48, 1) + " --set accumulation.mode=fixed --set accumulation.k=2");
  const auto two = train(kCnn + batch(48, 2) + " --nproc 2 --set accumulation.mode=fixed --set accumulation.k=2");
  const auto& sync = two.report["optimizations"]["grad_sync"];
  // One all-reduce per bucket per optimizer step (10 steps), not per micro-batch.
  CHECK(sync["buckets_launched_during_backward"].get<int>() == 10 * sync["buckets"].get<int>());
  CHECK(relative_difference(one.params, two.params) < 1e-6);
}

TEST_CASE("distributed.overlap_comm false sends every bucket after backward and gives the same parameters") {
  const auto sync = GENERATE(std::string("ddp"), std::string("zero2"));
  INFO(sync);
  const std::string common = kGpt + batch(8, 2) + " --nproc 2 --set distributed.bucket_mb=0.02 "
                             "--set accumulation.mode=fixed --set accumulation.k=2 --set distributed.grad_sync=" + sync;
  const auto during = train(common);
  const auto after = train(common + " --set distributed.overlap_comm=false");
  const auto& d = during.report["optimizations"]["grad_sync"];
  const auto& a = after.report["optimizations"]["grad_sync"];
  REQUIRE(d["buckets"].get<int>() > 1);
  CHECK(d["overlap_comm"] == true);
  CHECK(d["buckets_launched_during_backward"].get<int>() == 10 * d["buckets"].get<int>());
  CHECK(a["overlap_comm"] == false);
  CHECK(a["buckets_launched_during_backward"] == 0);
  CHECK(relative_difference(during.params, after.params) == 0);  // the same sums in the same order
}

TEST_CASE("activation checkpointing under ddp and zero2 gives the gradients of the plain run") {
  const auto one = train(kGpt + batch(12, 1));
  for (const char* sync : {"ddp", "zero2"}) {
    const auto two = train(kGpt + batch(12, 2) + " --nproc 2 --set checkpointing.policy=sqrt --set distributed.grad_sync=" +
                           sync);
    CHECK(two.report["optimizations"]["checkpointing"]["segments"].size() == 1);
    const double diff = relative_difference(one.params, two.params);
    INFO(sync << ": relative difference " << diff);
    CHECK(diff < 1e-6);
  }
}

TEST_CASE("adaptive accumulation over 2 processes estimates the noise scale from local and global gradients") {
  const auto sync = GENERATE(std::string("ddp"), std::string("zero2"));
  INFO(sync);
  const auto two = train("run experiments/smoke/wikitext2_gpt_tiny.yaml --nproc 2 --set train.batch_size=4 "
                         "--set train.max_steps=24 --set accumulation.mode=adaptive --set accumulation.k=1 "
                         "--set accumulation.k_min=1 --set accumulation.k_max=8 --set accumulation.interval=4 "
                         "--set distributed.grad_sync=" + sync);
  const auto& acc = two.report["optimizations"]["accumulation"];
  CHECK(acc["world_size"] == 2);
  CHECK(acc["k_min"] == 1);  // one process would need k >= 2
  CHECK(acc["estimate_from"].get<std::string>().find("global") != std::string::npos);
  REQUIRE(acc["noise_history"].size() == 6);
  int finite = 0;
  for (const auto& h : acc["noise_history"])
    if (h["b_noise"].is_number() && h["b_noise"].get<double>() > 0) ++finite;
  CHECK(finite >= 1);
  for (const auto& h : acc["k_history"]) {
    CHECK(h["k"].get<int>() >= 1);
    CHECK(h["k"].get<int>() <= 8);
  }
  CHECK(two.report["result"]["steps"] == 24);
}

TEST_CASE("a worker that exits with code 7 ends the job with exit 7 and a failed report naming it") {
  TempDir d;
  const auto [r, s] = run_with_fault(d, "--set train.max_steps=200", "1:exit=7@step=3");
  INFO(r.out << r.err);
  CHECK(r.exit_code == 7);
  CHECK(s < 15);
  CHECK(r.err.find("rank 1") != std::string::npos);
  const auto j = nlohmann::json::parse(read_text(d.file("run/report.json")));
  CHECK(j["status"] == "failed");
  CHECK(j["failure"]["rank"] == 1);
  CHECK(j["failure"]["exit_code"] == 7);
}

TEST_CASE("a worker killed by SIGKILL ends the job with exit 137") {
  TempDir d;
  const auto [r, s] = run_with_fault(d, "--set train.max_steps=200", "0:kill@step=3");
  INFO(r.out << r.err);
  CHECK(r.exit_code == 137);
  CHECK(s < 15);
  const auto j = nlohmann::json::parse(read_text(d.file("run/report.json")));  // written by the launcher
  CHECK(j["status"] == "failed");
  CHECK(j["failure"]["rank"] == 0);
  CHECK(j["failure"]["signal"].get<std::string>().find("Kill") != std::string::npos);
}

TEST_CASE("a worker that never reaches the rendezvous ends the job with a timeout error") {
  // Rank 0 too: it serves the store (on the launcher's socket) before it gets that far.
  const std::string fault = GENERATE(as<std::string>{}, "1:hang@rendezvous", "0:hang@rendezvous");
  CAPTURE(fault);
  TempDir d;
  const auto [r, s] = run_with_fault(d, "--set distributed.timeout_s=3 --set distributed.stop_grace_s=1", fault);
  INFO(r.out << r.err);
  CHECK(r.exit_code != 0);
  CHECK(s < 20);
  CHECK(r.out.find("rendezvous") != std::string::npos);
  CHECK(r.out.find("distributed.timeout_s") != std::string::npos);
}

TEST_CASE("a worker that hangs in training ends the job through the collective timeout") {
  TempDir d;
  const auto [r, s] = run_with_fault(
      d, "--set train.max_steps=200 --set distributed.timeout_s=3 --set distributed.stop_grace_s=1", "1:hang@step=3");
  INFO(r.out << r.err);
  CHECK(r.exit_code != 0);
  CHECK(s < 20);
  const auto j = nlohmann::json::parse(read_text(d.file("run/report.json")));
  CHECK(j["status"] == "failed");
  CHECK(j["failure"]["rank"] == 0);  // rank 0's collective timed out first; rank 1 was then stopped
}

TEST_CASE("a process with a malformed worker environment is refused with exit 2") {
  const auto r = run_efftrain("run experiments/quickstart.yaml --device cpu", EFFTRAIN_SOURCE_DIR,
                              "RANK=one WORLD_SIZE=2 MASTER_PORT=29500");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("RANK") != std::string::npos);
  const auto r2 = run_efftrain("run experiments/quickstart.yaml --device cpu", EFFTRAIN_SOURCE_DIR, "RANK=0");
  CHECK(r2.exit_code == 2);
  CHECK(r2.err.find("WORLD_SIZE") != std::string::npos);
}

TEST_CASE("grad_sync none with several processes is a config error") {
  const auto r = run_efftrain("validate experiments/quickstart.yaml --set distributed.world_size=2 "
                              "--set distributed.grad_sync=none");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("distributed.grad_sync") != std::string::npos);
}

TEST_CASE("gpu: ddp and zero2 over NCCL on two GPUs equal one GPU", "[gpu]") {
  if (torch::cuda::device_count() < 2) SKIP("needs two GPUs");
  const std::string gpt = kGpt + " --device cuda --set optim.name=adamw_fused";
  const auto one = train(gpt + batch(12, 1));
  for (const char* sync : {"ddp", "zero2"}) {
    const auto two = train(gpt + batch(12, 2) + " --nproc 2 --set distributed.grad_sync=" + sync);
    CHECK(two.report["optimizations"]["grad_sync"]["backend"] == "nccl");
    CHECK(two.report["environment"]["world_size"] == 2);
    for (const auto& r : two.report["ranks"]) CHECK(r["cuda_contexts_elsewhere"].empty());  // each on its own GPU
    const double diff = relative_difference(one.params, two.params);
    INFO(sync << ": relative difference " << diff);
    CHECK(diff < 1e-5);  // different per-GPU batch shapes pick different kernels
  }
}

TEST_CASE("gpu: fp16 under zero2 skips the same overflowing steps as ddp and ends equal", "[gpu]") {
  if (torch::cuda::device_count() < 2) SKIP("needs two GPUs");
  // 2^40 overflows at first: the scale halves until the gradients fit; an overflow in any
  // shard must skip the step on every rank.
  const std::string gpt = kGpt + " --device cuda --set optim.name=adamw_fused --set precision.mode=fp16 "
                          "--set precision.initial_scale_power=40 --set precision.hysteresis=1 --nproc 2" + batch(12, 2);
  const auto ddp = train(gpt + " --set distributed.grad_sync=ddp");
  const auto zero = train(gpt + " --set distributed.grad_sync=zero2");
  const auto& pd = ddp.report["optimizations"]["precision"];
  const auto& pz = zero.report["optimizations"]["precision"];
  CHECK(pd["overflows"].get<int>() > 0);
  CHECK(pz["overflows"] == pd["overflows"]);
  CHECK(pz["final_scale"] == pd["final_scale"]);
  CHECK(relative_difference(ddp.params, zero.params) < 1e-5);
}

namespace {

// torchrun from PATH, else the one beside the torch that efftrain was built with; empty if none.
std::string torchrun() {
  if (std::system("command -v torchrun >/dev/null 2>&1") == 0) return "torchrun";
  return std::filesystem::exists(EFFTRAIN_TORCHRUN) ? EFFTRAIN_TORCHRUN : "";
}

// `torchrun --standalone --no-python --nproc-per-node 2 efftrain run ...` (zero2, 20 steps of
// the tiny GPT): its report, after checking what every such run must show. torchrun's agent
// serves the store itself (TORCHELASTIC_USE_AGENT_STORE=True): rank 0 must not try to as well.
nlohmann::json run_under_torchrun(const std::string& device) {
  const std::string tr = torchrun();
  if (tr.empty()) SKIP("torchrun is neither on PATH nor beside the torch efftrain was built with");
  TempDir d;
  const std::string cmd = "cd '" EFFTRAIN_SOURCE_DIR "' && '" + tr + "' --standalone --no-python --nproc-per-node 2 '" EFFTRAIN_BIN
                          "' run experiments/smoke/wikitext2_gpt_tiny.yaml --device " + device +
                          " --set train.max_steps=20 --set distributed.grad_sync=zero2 --out '" + d.file("run") +
                          "' > '" + d.file("log") + "' 2>&1";
  const int status = std::system(cmd.c_str());
  const std::string log = read_text(d.file("log"));
  INFO(log);
  REQUIRE(status == 0);
  const auto j = nlohmann::json::parse(read_text(d.file("run/report.json")));
  CHECK(j["status"] == "completed");
  CHECK(j["environment"]["world_size"] == 2);
  CHECK(j["optimizations"]["grad_sync"]["name"] == "zero2");
  CHECK(j["ranks"].size() == 2);
  CHECK(log.find("has NOT been destroyed") == std::string::npos);  // no leaked process group at exit
  CHECK(log.find("failed to bind") == std::string::npos);          // rank 0 a client of the agent's store
  return j;
}

}  // namespace

TEST_CASE("the same binary runs unchanged under torchrun (CPU, Gloo)") { run_under_torchrun("cpu"); }

TEST_CASE("gpu: the same binary runs unchanged under torchrun", "[gpu]") {
  if (torch::cuda::device_count() < 2) SKIP("needs two GPUs");
  const auto j = run_under_torchrun("cuda");
  for (const auto& r : j["ranks"]) CHECK(r["cuda_contexts_elsewhere"].empty());
}

TEST_CASE("a zero2 checkpoint (model, one optimizer file per rank, manifest) continues the run exactly") {
  // A fixed batch and a constant learning rate: 10 + 10 steps from the checkpoint must equal
  // 20 steps in one go, which needs every rank's optimizer shard (moments and step counts).
  const std::string base = kCnn + batch(96, 2) + " --nproc 2 --set distributed.grad_sync=zero2 "
                           "--set task.data.input_path=fixed --set optim.name=adamw_fused";
  const auto whole = train(base + " --set train.max_steps=20");
  TempDir d;
  auto r = run_efftrain(base + " --set output.save_checkpoint=true --out '" + d.file("first") + "'");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const std::string ckpt = d.file("first/checkpoints/step-00000010");
  const auto manifest = nlohmann::json::parse(read_text(ckpt + "/manifest.json"));
  CHECK(manifest["format"] == "efftrain.checkpoint/2");
  CHECK(manifest["world_size"] == 2);
  CHECK(manifest["step"] == 10);
  CHECK(manifest["files"].size() == 5);  // model, and per rank the optimizer shard and the resume state
  // A run folder names its newest checkpoint.
  const auto second = train(base + " --set train.init_from='" + d.file("first") + "'");
  const double diff = relative_difference(whole.params, second.params);
  INFO("relative difference " << diff);
  CHECK(diff < 1e-6);
  const auto fresh = train(base);  // without the optimizer state it would not match
  CHECK(relative_difference(whole.params, fresh.params) > 1e-3);

  // Another world size is refused before anything is written.
  const auto three = run_efftrain(kCnn + batch(96, 3) + " --nproc 3 --set distributed.grad_sync=zero2 "
                                  "--set optim.name=adamw_fused --set train.init_from='" + ckpt + "' --out '" +
                                  d.file("three") + "'");
  CHECK(three.exit_code == 2);
  CHECK(three.err.find("manifest.json") != std::string::npos);
  CHECK(three.err.find("saved by 2 process(es); this run has 3") != std::string::npos);
  CHECK(read_text(d.file("three/report.json")).empty());

  // A changed byte (same size) passes the launcher's quick check and is refused by rank 0's
  // checksums, still before anything is written.
  {
    std::fstream f(ckpt + "/rank1.optimizer.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    const char c = static_cast<char>(f.get() ^ 0x5a);
    f.seekp(100);
    f.put(c);
  }
  const auto flipped = run_efftrain(base + " --set train.init_from='" + ckpt + "' --out '" + d.file("flipped") + "'");
  CHECK(flipped.exit_code == 2);
  INFO(flipped.out << flipped.err);  // the workers' lines reach the launcher's stdout, rank-prefixed
  CHECK((flipped.out + flipped.err).find("rank1.optimizer.pt: SHA-256 differs from the manifest's") != std::string::npos);
  CHECK(read_text(d.file("flipped/report.json")).empty());
  CHECK(read_text(d.file("flipped/config.yaml")).empty());
}

TEST_CASE("SIGTERM to the launcher stops every worker and the job exits 143") {
  TempDir d;
  const std::string out = d.file("run");
  // The workers are the launcher's children: note their pids, stop the launcher, and check
  // that none of them is left.
  const std::string script = "cd '" EFFTRAIN_SOURCE_DIR "' && '" EFFTRAIN_BIN
                             "' run experiments/quickstart.yaml --device cpu --nproc 2 --set train.max_steps=1000000 "
                             "--out '" + out + "' > '" + d.file("log") + "' 2>&1 & pid=$!; sleep 4; pgrep -P $pid > '" +
                             d.file("kids") + "'; kill -TERM $pid; wait $pid; echo $? > '" + d.file("rc") +
                             "'; sleep 1; for k in $(cat '" + d.file("kids") + "'); do kill -0 $k 2>/dev/null && "
                             "echo $k; done > '" + d.file("left") + "'; true";
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(std::system(script.c_str()) == 0);
  INFO(read_text(d.file("log")));
  CHECK(std::atoi(read_text(d.file("rc")).c_str()) == 143);
  const std::string kids = read_text(d.file("kids"));
  CHECK(std::count(kids.begin(), kids.end(), '\n') == 2);
  CHECK(read_text(d.file("left")).empty());  // no worker left behind
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 20);
  const auto j = nlohmann::json::parse(read_text(out + "/report.json"));
  CHECK(j["status"] == "failed");
  CHECK(j["failure"]["interrupted"] == true);
}

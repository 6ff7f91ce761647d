// Tasks end to end on the CPU (small variants, synthetic data of the real shape).
#include <catch2/catch_test_macros.hpp>

#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>

#include "helpers.h"

using namespace efftrain::test;

namespace {
nlohmann::json run_report(const std::string& args, int expect_exit = 0) {
  TempDir d;
  auto r = run_efftrain(args + " --out '" + d.file("run") + "'");
  INFO(r.err);
  REQUIRE(r.exit_code == expect_exit);
  return nlohmann::json::parse(read_text(d.file("run/report.json")));
}
}  // namespace

TEST_CASE("a tiny ResNet learns the CIFAR-shaped synthetic set on the CPU") {
  const auto j = run_report("run experiments/smoke/cifar10_resnet_tiny.yaml");
  CHECK(j["model"]["name"] == "resnet");
  CHECK(j["model"]["image_size"] == 32);
  CHECK(j["quality"]["final"].get<double>() > 0.4);  // chance is 0.1
  CHECK(j["model"]["bn_kernel"] == "aten");
  CHECK(j["model"]["fused_bn_relu"] == false);
  CHECK(j["model"]["conv_grads_in_place"] == false);
  CHECK(j["model"]["conv_grads"] == "autograd");
}

TEST_CASE("task.model.fused_bn_relu and conv_grads_in_place on the CPU: ATen's ops run, and the report says so") {
  const auto j = run_report("run experiments/smoke/cifar10_resnet_tiny.yaml --set train.max_steps=2 "
                            "--set task.model.fused_bn_relu=true --set task.model.conv_grads_in_place=true");
  CHECK(j["model"]["fused_bn_relu"] == true);
  CHECK(j["model"]["bn_kernel"] == "aten");
  CHECK(j["model"]["conv_grads_in_place"] == true);
  CHECK(j["model"]["conv_grads"] == "autograd");
}

TEST_CASE("the three input paths train the same tiny ResNet") {
  for (const char* path : {"host", "device", "fixed"}) {
    const auto j = run_report(std::string("run experiments/smoke/cifar10_resnet_tiny.yaml --set train.max_steps=4 "
                                          "--set task.data.input_path=") + path);
    CHECK(j["model"]["input_path"] == path);
    CHECK(j["result"]["steps"] == 4);
  }
}

TEST_CASE("the language model's host and device input paths feed the same sequences") {
  std::vector<double> losses;
  for (const char* path : {"host", "device"}) {
    const auto j = run_report(std::string("run experiments/smoke/wikitext2_gpt_tiny.yaml --set train.max_steps=6 "
                                          "--set train.eval_every=0 --set task.data.input_path=") + path);
    CHECK(j["model"]["input_path"] == path);
    losses.push_back(j["quality"]["final_train_loss"].get<double>());
  }
  CHECK(losses[0] == losses[1]);
}

TEST_CASE("task.model.matmul in the report: the mode, and what tuning found (on the CPU: nothing timed)") {
  for (const char* how : {"aten", "tuned"}) {
    const auto j = run_report(std::string("run experiments/smoke/wikitext2_gpt_tiny.yaml --set train.max_steps=2 "
                                          "--set train.eval_every=0 --set task.model.matmul=") + how);
    CHECK(j["model"]["matmul"] == how);
    if (std::string(how) == "aten") {
      CHECK(j["model"]["matmul_tuning"].is_null());
    } else {
      CHECK(j["model"]["matmul_tuning"]["shapes"] == 0);
      CHECK(j["model"]["matmul_tuning"]["tuning_s"] == 0.0);
    }
  }
}

TEST_CASE("bf16 autocast on the CPU trains the quickstart model") {
  const auto j = run_report("run experiments/quickstart.yaml --set precision.mode=bf16");
  CHECK(j["optimizations"]["precision"]["autocast_dtype"] == "bfloat16");
  CHECK(j["mfu_detail"]["compute_dtype"] == "bfloat16");
  CHECK(j["quality"]["final"].get<double>() > 0.5);
}

TEST_CASE("fp16 on a CPU run is refused at build time with a clear error") {
  auto r = run_efftrain("run experiments/quickstart.yaml --device cpu --set precision.mode=fp16");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("fp16 needs a CUDA device") != std::string::npos);
}

TEST_CASE("adamw_fused and gradient clipping train the quickstart model") {
  const auto j = run_report("run experiments/quickstart.yaml --set optim.name=adamw_fused --set optim.grad_clip=1.0");
  CHECK(j["optimizations"]["optimizer"]["name"] == "adamw_fused");
  CHECK(j["optimizations"]["optimizer"]["groups"].size() == 2);
  CHECK(j["quality"]["final"].get<double>() > 0.5);
}

TEST_CASE("sqrt checkpointing runs the tiny ResNet and reports its segments and recompute cost") {
  const auto j = run_report("run experiments/smoke/cifar10_resnet_tiny.yaml --set train.max_steps=4 "
                            "--set checkpointing.policy=sqrt");
  const auto& c = j["optimizations"]["checkpointing"];
  CHECK(c["policy"] == "sqrt");
  CHECK(c["blocks"] == 3);
  CHECK(c["segments"].size() == 2);  // ceil(sqrt(3)) = 2: [0,2) and [2,3)
  CHECK(c["recompute_forward_flops_per_sample"].get<double>() > 0);
  CHECK(c["recompute_overhead_fraction"].get<double>() < 1.0 / 3.0);
}

TEST_CASE("checkpointing a model without blocks is refused with exit 2") {
  auto r = run_efftrain("run experiments/quickstart.yaml --set checkpointing.policy=sqrt");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("has none") != std::string::npos);
}

TEST_CASE("a tiny GPT lowers perplexity clearly on synthetic text") {
  const auto j = run_report("run experiments/smoke/wikitext2_gpt_tiny.yaml");
  CHECK(j["quality"]["metric"] == "perplexity");
  CHECK(j["quality"]["higher_is_better"] == false);
  const auto& curve = j["quality"]["curve"];
  REQUIRE(curve.size() == 2);
  CHECK(j["quality"]["final"].get<double>() < 10.0);  // from ~64 at the start
  CHECK(j["throughput"]["tokens_per_s"].get<double>() > 0);
  CHECK(j["result"]["tokens"] == 120 * 16 * 32);
  CHECK(j["model"]["attention_kernel"].is_string());
}

TEST_CASE("a tiny GPT on the real WikiText-2 validation text lowers perplexity clearly") {
  const std::string shared = shared_data_dir();
  if (shared.empty()) SKIP("no shared data (../shared/data) beside the checkout");
  const std::string tar = shared + "/wikitext-2-v1.tar.xz";
  const std::string vocab = shared + "/gpt2";
  TempDir d;
  REQUIRE(std::system(("tar -xJf '" + tar + "' -C '" + d.path() + "'").c_str()) == 0);
  const std::string root = d.path() + (read_text(d.file("wiki.valid.tokens")).empty() ? "/wikitext-2" : "");
  const auto j = run_report("run experiments/smoke/wikitext2_gpt_tiny.yaml --set task.data.synthetic=false "
                            "--set task.data.root='" + root + "' --set task.data.vocab_dir='" + vocab +
                            "' --set task.data.cache_dir='" + d.file("cache") + "' --set task.data.train_split=valid "
                            "--set task.data.eval_split=valid --set task.data.eval_limit=16 --set train.max_steps=60 "
                            "--set train.eval_every=0 --set task.data.seq_len=32");
  CHECK(j["model"]["vocab"] == 50257);
  CHECK(j["quality"]["final"].get<double>() < 3000.0);  // an untrained model is near 50257
}

TEST_CASE("adaptive accumulation runs end to end and reports k and the noise estimate") {
  const auto j = run_report("run experiments/quickstart.yaml --set accumulation.mode=adaptive "
                            "--set accumulation.interval=5 --set train.max_steps=30 --set schedule.name=warmup_cosine "
                            "--set schedule.unit=samples --set schedule.warmup=256 --set schedule.total=8000");
  const auto& a = j["optimizations"]["accumulation"];
  CHECK(a["mode"] == "adaptive");
  CHECK(a["noise_history"].size() == 6);
  CHECK(j["result"]["samples"].get<int64_t>() >= 30 * 64 * 2);  // k >= 2 with one process
}

TEST_CASE("timing_restart_on_k_change starts the throughput window again after each change of adaptive k") {
  const std::string run = "run experiments/quickstart.yaml --set accumulation.mode=adaptive --set accumulation.interval=5 "
                          "--set train.max_steps=30 --set train.timing_warmup_steps=3 --set train.timing_restart_on_k_change=";
  const auto on = run_report(run + "true"), off = run_report(run + "false");
  // Each change of k after the warm-up (and before the last step) restarts the window after
  // that step: the window is the steps after the last such change.
  int64_t changes = 0, last_change = 3;
  for (const auto& h : on["optimizations"]["accumulation"]["k_history"]) {
    const int64_t s = h["step"].get<int64_t>();
    if (s > 3 && s < 30) {
      ++changes;
      last_change = s;
    }
  }
  REQUIRE(changes >= 1);  // this run changes k at steps 6 and 11
  CHECK(on["throughput"]["window_restarts"] == changes);
  CHECK(on["throughput"]["steady_steps"] == 30 - last_change);
  CHECK(on["throughput"]["warmup_steps_excluded"] == last_change);
  CHECK(off["optimizations"]["accumulation"]["k_history"] == on["optimizations"]["accumulation"]["k_history"]);
  CHECK(off["throughput"]["window_restarts"] == 0);
  CHECK(off["throughput"]["steady_steps"] == 27);
}

TEST_CASE("the budget placement needs the CUDA allocator and says so on a CPU run") {
  auto r = run_efftrain("run experiments/smoke/cifar10_resnet_tiny.yaml --set checkpointing.policy=budget "
                        "--set checkpointing.budget_bytes=1000000");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("budget measures activation memory with the CUDA allocator") != std::string::npos);
}

TEST_CASE("sqrt_balanced places sqrt's number of segments by measured bytes and saves at least what sqrt saves") {
  // Two bottlenecks per stage (6 blocks, the first stage's the largest): sqrt makes {0,3},{3,3}.
  const std::string run = "run experiments/smoke/cifar10_resnet_tiny.yaml --set task.model.blocks=[2,2,2] "
                          "--set train.max_steps=4 --set train.eval_every=0 --set checkpointing.policy=";
  const auto sqrt = run_report(run + "sqrt");
  const auto balanced = run_report(run + "sqrt_balanced");
  const auto& c = balanced["optimizations"]["checkpointing"];
  INFO(c.dump());
  CHECK(c["policy"] == "sqrt_balanced");
  CHECK(c["blocks"] == 6);
  REQUIRE(c["segments"].size() == 2);
  CHECK(c["segments"][0]["first_block"] == 0);
  CHECK(c["segments"][0]["blocks"].get<int64_t>() + c["segments"][1]["blocks"].get<int64_t>() == 6);
  CHECK(c["segments"][0]["blocks"].get<int64_t>() < 3);  // the large first stage is split off
  const auto saved = [](const nlohmann::json& j) {
    return j["optimizations"]["checkpointing"]["memory_saved"]["fraction"].get<double>();
  };
  CHECK(saved(balanced) > saved(sqrt));
  CHECK(balanced["status"] == "completed");
}

TEST_CASE("selective recompute trains the tiny GPT and is refused for a ResNet with exit 2") {
  const auto j = run_report("run experiments/smoke/wikitext2_gpt_tiny.yaml --set train.max_steps=20 "
                            "--set checkpointing.policy=selective --set task.model.fused_loss=true");
  const auto& c = j["optimizations"]["checkpointing"];
  CHECK(c["policy"] == "selective");
  CHECK(c["recomputed"].size() == 1);  // the GELU outputs
  CHECK(c["not_kept"].size() == 1);    // the logits
  CHECK(c["memory_saved"]["why"].get<std::string>().find("selective") != std::string::npos);
  CHECK(j["model"]["loss_kernel"] == "aten, chunked");  // no CUDA here
  CHECK(j["status"] == "completed");
  CHECK(j["quality"]["final"].get<double>() < 40.0);  // from ~64 at the start
  auto r = run_efftrain("run experiments/smoke/cifar10_resnet_tiny.yaml --set checkpointing.policy=selective");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("has no selective recompute") != std::string::npos);
}

TEST_CASE("train.profile_start_step writes a Chrome trace of the profiled steps and reports it") {
  TempDir d;
  auto r = run_efftrain("run experiments/smoke/wikitext2_gpt_tiny.yaml --set train.max_steps=6 "
                        "--set train.profile_start_step=3 --set train.profile_steps=2 --out '" + d.file("run") + "'");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(read_text(d.file("run/report.json")));
  const auto& p = j["profile"];
  CHECK(p["saved"] == true);
  CHECK(p["steps"] == nlohmann::json::array({3, 4}));
  const auto trace = nlohmann::json::parse(read_text(p["trace"].get<std::string>()));
  int64_t ops = 0;
  for (const auto& e : trace["traceEvents"])
    if (e.value("cat", "") == "cpu_op" && e.value("name", "").find("aten::") == 0) ++ops;
  CHECK(ops > 100);  // two steps of a GPT's forward, backward and update
  CHECK_FALSE(read_text(d.file("run/profile/trace.rank0.json.partial")).size() > 0);
  // Each step's phases are named ranges, which scripts/trace_phases.py tabulates.
  std::map<std::string, int> ranges;
  for (const auto& e : trace["traceEvents"])
    if (e.value("cat", "") == "user_annotation") ++ranges[e.value("name", "")];
  CHECK(ranges["efftrain::zero_grad"] == 2);
  CHECK(ranges["efftrain::micro_step"] == 2);  // k = 1
  CHECK(ranges["efftrain::grad_sync"] == 2);
  CHECK(ranges["efftrain::optimizer"] == 2);
  CHECK(ranges["efftrain::after_step"] == 2);
  const std::string cmd = "python3 '" EFFTRAIN_SOURCE_DIR "/scripts/trace_phases.py' --json '" + d.file("phases.json") +
                          "' run='" + p["trace"].get<std::string>() + "' > '" + d.file("phases.txt") + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const auto ph = nlohmann::json::parse(read_text(d.file("phases.json")))["run"];
  CHECK(ph["steps"] == 2);
  CHECK(ph["phases_per_step"]["micro_step"]["host_ms"].get<double>() > 0);
  CHECK(ph["phases_per_step"]["optimizer"]["host_ms"].get<double>() > 0);
}

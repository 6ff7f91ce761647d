// Checkpoints, exact resume and restarts, through the efftrain binary on the CPU: a run killed
// mid-way and resumed ends bit-identical to one that ran through (losses and parameters), for a
// tiny CNN and a tiny GPT, one process and two (ddp, zero2); bad checkpoints are refused.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "efftrain/core/files.h"
#include "helpers.h"
#include "model_files.h"

using namespace efftrain::test;
namespace files = efftrain::files;

namespace {

// Augmentation, shuffling over several epochs, evaluation, a warmup + cosine schedule and
// gradient clipping: everything whose position a resume must restore.
const std::string kCnn =
    "run experiments/quickstart.yaml --device cpu --set train.max_steps=20 --set train.eval_every=5 "
    "--set output.log_every=1 --set schedule.name=warmup_cosine --set schedule.warmup=4 --set optim.grad_clip=1.0 "
    "--set task.data.train_samples=512 --set output.save_model=true";
// Dropout (the RNG), adaptive accumulation (the noise estimator and k), samples-based schedule.
const std::string kGpt =
    "run experiments/smoke/wikitext2_gpt_tiny.yaml --set train.max_steps=20 --set train.eval_every=5 "
    "--set output.log_every=1 --set task.model.dropout=0.1 --set accumulation.mode=adaptive "
    "--set accumulation.k=2 --set accumulation.interval=3 --set schedule.name=warmup_cosine "
    "--set schedule.unit=samples --set schedule.warmup=64 --set schedule.total=1000 --set output.save_model=true";

struct Finished {
  nlohmann::json report;
  std::map<std::string, torch::Tensor> params;
  std::vector<nlohmann::json> losses;  // {step, train_loss, lr, samples} of every metrics row
};

Finished finished(const std::string& dir) {
  Finished f;
  f.report = nlohmann::json::parse(read_text(dir + "/report.json"));
  f.params = load_tensors(dir + "/model.pt");
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto row = nlohmann::json::parse(line);
    if (row.contains("train_loss") && !row.contains("eval"))
      f.losses.push_back({{"step", row["step"]}, {"train_loss", row["train_loss"]}, {"lr", row["lr"]},
                          {"samples", row["samples"]}});
    if (row.contains("eval")) f.losses.push_back({{"step", row["step"]}, {"eval", row["eval"]}});
  }
  return f;
}

Finished uninterrupted(const std::string& args) {
  TempDir d;
  const auto r = run_efftrain(args + " --out '" + d.file("run") + "'");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  return finished(d.file("run"));
}

// Killed (SIGKILL) at `kill_step`, checkpoints every `every` steps, then resumed with --resume auto.
Finished killed_and_resumed(const std::string& args, const std::string& dir, int kill_step, int every) {
  const std::string ck = " --set output.checkpoint_every_steps=" + std::to_string(every) + " --out '" + dir + "'";
  const auto first = run_efftrain(args + ck, EFFTRAIN_SOURCE_DIR, "EFFTRAIN_FAULT=0:kill@step=" + std::to_string(kill_step));
  INFO(first.out << first.err);
  REQUIRE(first.exit_code == 137);
  REQUIRE_FALSE(files::exists(dir + "/report.json"));
  const auto second = run_efftrain(args + ck + " --resume auto");
  INFO(second.out << second.err);
  REQUIRE(second.exit_code == 0);
  return finished(dir);
}

void check_same_run(const Finished& whole, const Finished& resumed, int64_t resumed_step) {
  CHECK(identical(whole.params, resumed.params));
  INFO("relative difference " << relative_difference(whole.params, resumed.params));
  CHECK(whole.losses == resumed.losses);
  CHECK(resumed.report["result"]["resumed_from"]["step"] == resumed_step);
  CHECK(resumed.report["result"]["steps"] == whole.report["result"]["steps"]);
  CHECK(resumed.report["result"]["samples"] == whole.report["result"]["samples"]);
  CHECK(resumed.report["quality"]["final"] == whole.report["quality"]["final"]);
  CHECK(resumed.report["quality"]["curve"].size() == whole.report["quality"]["curve"].size());
}

void flip_byte(const std::string& path, off_t at) {
  const int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  unsigned char c = 0;
  REQUIRE(::pread(fd, &c, 1, at) == 1);
  c ^= 0x5a;
  REQUIRE(::pwrite(fd, &c, 1, at) == 1);
  ::close(fd);
}

}  // namespace

TEST_CASE("a killed single-process run resumes bit-identical (tiny CNN, tiny GPT)") {
  // The third evaluates every 300 samples (batch 64: steps 5, 10, 15, 19): resumed at 12, the next is due at 15.
  const std::string args = GENERATE(kCnn, kGpt, kCnn + " --set train.eval_every_samples=300");
  const auto whole = uninterrupted(args);
  TempDir d;
  const auto resumed = killed_and_resumed(args, d.file("run"), /*kill_step=*/13, /*every=*/4);
  check_same_run(whole, resumed, 12);
  // Retention: output.keep_checkpoints (3) newest of 4, 8, 12, 16, 20.
  CHECK(files::list_dir(d.file("run/checkpoints")) ==
        std::vector<std::string>{"step-00000012", "step-00000016", "step-00000020"});
  // Clocks continue from the checkpoint's: the resumed run's loop time (training, evaluation and
  // checkpoint writing) is the first part's plus at least the second process's measured steps.
  // train_s alone leaves out the evaluations, which can outweigh the steps on a slow machine.
  const auto& res = resumed.report["result"];
  const double checkpoint_clock = res["resumed_from"]["loop_s"].get<double>();
  const double loop_s = res["train_s"].get<double>() + res["eval_s"].get<double>() + res["checkpoint_s"].get<double>();
  CHECK(checkpoint_clock > 0);
  CHECK(loop_s >= checkpoint_clock + resumed.report["throughput"]["steady_s"].get<double>());
}

TEST_CASE("a resumed policy-auto run keeps the decisions made before its checkpoint") {
  // Checkpointing switched off at step 3 (an ample budget); killed at step 7, resumed from step 4.
  const std::string args = kGpt + " --set checkpointing.policy=sqrt --set policy.mode=auto --set policy.observe_steps=3 "
                                  "--set policy.memory_budget_bytes=8000000000 --set train.max_steps=10";
  const auto whole = uninterrupted(args);
  TempDir d;
  const auto resumed = killed_and_resumed(args, d.file("run"), /*kill_step=*/7, /*every=*/4);
  check_same_run(whole, resumed, 4);
  const auto& pw = whole.report["optimizations"]["policy"];
  const auto& pr = resumed.report["optimizations"]["policy"];
  INFO(pw.dump() << "\n" << pr.dump());
  REQUIRE(pw["decisions"].size() >= 1);
  CHECK(pw["decisions"][0]["component"] == "checkpointing");
  CHECK(pw["decisions"][0]["action"] == "switched_off");
  REQUIRE(pr["decisions"].size() == pw["decisions"].size());
  for (size_t i = 0; i < pw["decisions"].size(); ++i)
    for (const char* key : {"component", "action", "step"}) CHECK(pr["decisions"][i][key] == pw["decisions"][i][key]);
  CHECK(pr["checkpointing_segments_at_end"].empty());
}

TEST_CASE("a worker killed mid-run is survived: --max-restarts resumes every rank, same final parameters") {
  // ddp on the CNN and zero2 (sharded optimizer state) on the GPT, two processes each.
  const auto [args, sync] = GENERATE(std::make_pair(kCnn, std::string("ddp")), std::make_pair(kGpt, std::string("zero2")));
  const std::string two = args + " --nproc 2 --set train.batch_size=8 --set distributed.grad_sync=" + sync;
  const auto whole = uninterrupted(two);
  TempDir d;
  const auto r = run_efftrain(two + " --set output.checkpoint_every_steps=5 --max-restarts 2 --out '" + d.file("run") + "'",
                              EFFTRAIN_SOURCE_DIR, "EFFTRAIN_FAULT=1:kill@step=12");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const auto resumed = finished(d.file("run"));
  check_same_run(whole, resumed, 10);
  const auto& restarts = resumed.report["restarts"];
  CHECK(restarts["count"] == 1);
  CHECK(restarts["max"] == 2);
  CHECK(restarts["attempts"][0]["failed_rank"] == 1);
  CHECK(restarts["attempts"][0]["exit_code"] == 137);
  CHECK(restarts["lost_s"].get<double>() >= 0);
  CHECK(resumed.report["status"] == "completed");
}

TEST_CASE("resume refuses a checkpoint of another experiment, world size, or with a damaged or missing file") {
  TempDir d;
  const std::string base = kCnn + " --set train.max_steps=6";
  const auto first = run_efftrain(base + " --set output.checkpoint_every_steps=3 --out '" + d.file("run") + "'");
  INFO(first.out << first.err);
  REQUIRE(first.exit_code == 0);
  const std::string ck = d.file("run/checkpoints/step-00000006");
  REQUIRE(files::exists(ck + "/manifest.json"));

  // Each refusal: exit 2, one line naming the file, nothing written in the new output folder.
  auto refused = [&](const std::string& args, const std::string& resume, const std::string& expect) {
    const std::string out = d.file("refused");
    const auto r = run_efftrain(args + " --resume '" + resume + "' --out '" + out + "'");
    INFO(r.out << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(expect) != std::string::npos);
    CHECK_FALSE(files::exists(out + "/report.json"));
    CHECK_FALSE(files::exists(out + "/config.yaml"));
  };
  refused(base + " --set optim.lr=0.01", ck, "written by a different experiment");
  refused(base + " --nproc 2 --set train.batch_size=32", ck, "saved by 1 process(es); this run has 2");
  // A longer run from the same checkpoint is the same experiment (stop limits may change).
  {
    const auto r = run_efftrain(kCnn + " --set train.max_steps=9 --resume '" + ck + "' --out '" + d.file("longer") + "'");
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    CHECK(nlohmann::json::parse(read_text(d.file("longer/report.json")))["result"]["steps"] == 9);
  }

  const std::string model = ck + "/model.pt";
  const std::string saved = read_text(model);
  flip_byte(model, static_cast<off_t>(saved.size() / 2));
  refused(base, ck, "model.pt: SHA-256 differs from the manifest's");
  REQUIRE(::truncate(model.c_str(), static_cast<off_t>(saved.size() / 2)) == 0);
  refused(base, ck, "model.pt: " + std::to_string(saved.size() / 2) + " bytes, the manifest says");
  {
    std::ofstream(model, std::ios::binary | std::ios::trunc) << saved;
  }
  ::unlink((ck + "/rank0.optimizer.pt").c_str());
  refused(base, ck, "rank0.optimizer.pt: missing");
  refused(base, d.file("nowhere"), "nowhere: no such checkpoint folder");
  // A run folder whose checkpoints all fail says why the newest did.
  refused(base + " --nproc 2 --set train.batch_size=32", d.file("run"), "holds no valid checkpoint (newest: ");
  {  // resuming into another run's non-empty folder still needs --overwrite
    const auto r = run_efftrain(base + " --resume '" + d.file("run") + "' --out '" + d.file("longer") + "'");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("already exists and is not empty") != std::string::npos);
  }

  // auto skips the damaged newest checkpoint (with a warning) and a folder a kill left
  // half-written, and continues from the newest valid one.
  files::make_dirs(d.file("run/checkpoints/step-00000009.partial"));
  const auto r = run_efftrain(base + " --resume auto --out '" + d.file("run") + "'");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("skipping checkpoint") != std::string::npos);
  CHECK(nlohmann::json::parse(read_text(d.file("run/report.json")))["result"]["resumed_from"]["step"] == 3);
}

TEST_CASE("resume auto with no checkpoint yet starts from the beginning; it needs a named output folder") {
  TempDir d;
  const auto r = run_efftrain(kCnn + " --set train.max_steps=3 --set schedule.warmup=1 --resume auto --out '" + d.file("run") + "'");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(read_text(d.file("run/report.json")))["result"]["resumed_from"].is_null());
  const auto unnamed = run_efftrain(kCnn + " --resume auto");
  CHECK(unnamed.exit_code == 2);
  CHECK(unnamed.err.find("--resume auto: name the run's folder with --out") != std::string::npos);
}

TEST_CASE("gpu: an fp16 run killed and resumed continues the loss scaler's state", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  // A high initial scale overflows at first and a short window grows it again: the scale
  // history depends on the state at the checkpoint.
  const std::string args = kGpt + " --device cuda --set precision.mode=fp16 --set precision.initial_scale_power=30 "
                                  "--set precision.loss_scale_window=3";
  const auto whole = uninterrupted(args);
  TempDir d;
  const auto resumed = killed_and_resumed(args, d.file("run"), 13, 4);
  const auto& a = whole.report["optimizations"]["precision"];
  const auto& b = resumed.report["optimizations"]["precision"];
  CHECK(a["overflows"].get<int64_t>() > 0);
  CHECK(b["overflows"] == a["overflows"]);
  CHECK(b["final_scale"] == a["final_scale"]);
  CHECK(b["scale_history"] == a["scale_history"]);
  CHECK(relative_difference(whole.params, resumed.params) < 1e-5);
}

TEST_CASE("checkpoints by time come where the loop reads the clock: every 10 steps, logs, evaluations, the end of the timing warm-up (step 3)") {
  TempDir d;
  const auto r = run_efftrain(kCnn + " --set train.max_steps=30 --set output.log_every=10 --set train.eval_every=15 "
                                     "--set output.checkpoint_every_min=0.00001 "
                                     "--set output.keep_checkpoints=0 --out '" + d.file("run") + "'");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(files::list_dir(d.file("run/checkpoints")) ==
        std::vector<std::string>{"step-00000003", "step-00000010", "step-00000015", "step-00000020", "step-00000030"});
  const auto j = nlohmann::json::parse(read_text(d.file("run/report.json")));
  CHECK(j["result"]["checkpoints"]["written"] == 5);
  CHECK(j["result"]["checkpoint_s"].get<double>() > 0);
}

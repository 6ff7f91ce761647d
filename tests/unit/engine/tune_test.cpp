#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_floating_point.hpp>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "efftrain/config/config.h"
#include "efftrain/engine/tune.h"
#include "helpers.h"

using namespace efftrain;
using Catch::Matchers::WithinRel;

namespace {
tune::Measurement ran(double sps, int64_t peak, int64_t batch) {
  tune::Measurement m;
  m.samples_per_s = sps;
  m.peak_bytes = peak;
  m.global_batch = batch;
  return m;
}
}  // namespace

TEST_CASE("tune: statistical efficiency and the score on synthetic measurements") {
  CHECK_THAT(tune::statistical_efficiency(100, 100, 100), WithinRel(1.0));
  CHECK_THAT(tune::statistical_efficiency(100, 100, 300), WithinRel(0.5));     // (100+100)/(100+300)
  CHECK_THAT(tune::statistical_efficiency(0, 100, 300), WithinRel(100.0 / 300)); // no noise: only steps count
  tune::Options o;
  o.b_noise = 100;
  const auto base = ran(1000, 4000, 100);
  double eff = 0, gp = 0;
  // Twice the throughput at three times the batch: goodput 2000 x 0.5 = 1000, the baseline's.
  CHECK_THAT(tune::score(ran(2000, 3000, 300), base, o, &eff, &gp), WithinRel(1.0));
  CHECK_THAT(eff, WithinRel(0.5));
  CHECK_THAT(gp, WithinRel(1000.0));
  CHECK_THAT(tune::score(ran(1500, 3000, 100), base, o), WithinRel(1.5));
  o.budget_bytes = 3500;
  CHECK(std::isinf(tune::score(base, base, o)));  // the baseline itself is over this budget
  o.headroom_weight = 1.0;  // 1500 bytes free of 3500 adds 3/7
  CHECK_THAT(tune::score(ran(1500, 2000, 100), base, o), WithinRel(1.5 * (1 + 1500.0 / 3500)));
}

TEST_CASE("tune: the search picks the known best of a simulated cost model, prunes what cannot fit and says why") {
  // Cost model: bf16 is 3x fp32; sqrt costs 25% and halves the activations; doubling the batch
  // gives +20% throughput and doubles the activations. Peak = 1000 fixed + activations.
  std::vector<tune::Candidate> cands = {{"as-written", {}, "", 64}};
  for (const std::string p : {"fp32", "bf16"})
    for (const std::string ck : {"none", "sqrt"})
      for (const int64_t b : {64, 128}) cands.push_back({p + "-" + ck + "-" + std::to_string(b), {}, p + "-" + ck, b});
  std::vector<std::string> measured;
  auto model = [&](const tune::Candidate& c) {
    measured.push_back(c.name);
    if (c.name == "as-written") return ran(100, 1000 + 2000, 64);
    const bool bf16 = c.family.rfind("bf16", 0) == 0, sqrt = c.family.find("sqrt") != std::string::npos;
    double sps = 100 * (bf16 ? 3 : 1) * (sqrt ? 0.75 : 1) * (c.micro_batch == 128 ? 1.2 : 1);
    int64_t act = (bf16 ? 1000 : 2000) * (c.micro_batch / 64) / (sqrt ? 2 : 1);
    return ran(sps, 1000 + act, c.micro_batch);
  };
  tune::Options o;
  o.b_noise = 1000;  // large: a doubled batch keeps most of its efficiency
  // No budget: the fastest goodput wins (bf16, no checkpointing, the doubled batch).
  auto r = tune::search(cands, model, o, [] { return 0.0; });
  CHECK(r.rows[r.winner].candidate.name == "bf16-none-128");
  CHECK(r.rows[0].verdict.find("score") != std::string::npos);  // the baseline lost on score
  // A 2,600-byte budget: bf16-none-128 (3,000) is over; fp32-none-64 (3,000) too, so
  // fp32-none-128 is pruned unrun; the winner is bf16-none-64 (2,000).
  measured.clear();
  o.budget_bytes = 2600;
  r = tune::search(cands, model, o, [] { return 0.0; });
  CHECK(r.rows[r.winner].candidate.name == "bf16-none-64");
  std::map<std::string, std::string> verdict;
  for (const auto& row : r.rows) verdict[row.candidate.name] = row.verdict;
  CHECK(verdict["fp32-none-128"].rfind("pruned", 0) == 0);
  CHECK(std::find(measured.begin(), measured.end(), "fp32-none-128") == measured.end());
  CHECK(verdict["bf16-none-128"].find("over the memory budget") != std::string::npos);
  CHECK(verdict["bf16-sqrt-64"].find("score") != std::string::npos);
  // Out of time after the baseline: nothing else runs, the baseline wins by default.
  double t = 0;
  r = tune::search(cands, model, tune::Options{0, 0, 1.0, {}}, [&] { return t += 1; });
  CHECK(r.winner == 0);
  CHECK(r.rows[1].m.outcome == "not_run");
}

TEST_CASE("efftrain tune measures the candidates of a small CPU experiment and writes a valid tuned YAML") {
  test::TempDir d;
  const auto r = test::run_efftrain("tune experiments/quickstart.yaml --set device=cpu --steps 6 --out '" + d.file("t") + "'"
                                    " --set task.data.train_samples=512");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(test::read_text(d.file("t/tune.json")));
  // As written + {fp32, bf16} x {none, sqrt} x {b, 2b}, less fp32-none-b64: that is the
  // experiment as written (fp32, no checkpointing, no accumulation, batch 64), measured once.
  CHECK(j["candidates"].size() == 8);
  for (const auto& c : j["candidates"]) CHECK(c["name"] != "fp32-none-b64");
  int ran = 0;
  for (const auto& c : j["candidates"]) ran += c["outcome"] == "ran";
  CHECK(ran == 4);  // the small CNN has no blocks: its four sqrt candidates are not applicable
  // the search's cost, stated against the experiment as written (quickstart: max_steps 120)
  const auto& base = j["candidates"][0];
  REQUIRE(j["run_estimate_s"].is_number());
  CHECK_THAT(j["run_estimate_s"].get<double>(),
             Catch::Matchers::WithinRel(120.0 * base["global_batch"].get<double>() / base["samples_per_s"].get<double>(), 1e-9));
  CHECK_THAT(j["search_fraction_of_run"].get<double>(),
             Catch::Matchers::WithinRel(j["search_s"].get<double>() / j["run_estimate_s"].get<double>(), 1e-9));
  CHECK(test::read_text(d.file("t/tune.md")).find("of the experiment as written") != std::string::npos);
  const auto tuned = config::load(d.file("t/tuned.yaml"));
  CHECK(tuned.name == "quickstart-tuned");
  CHECK(test::read_text(d.file("t/tune.md")).find("winner") != std::string::npos);
  // Bad input is refused before anything runs.
  const auto bad = test::run_efftrain("tune experiments/quickstart.yaml --set optim.lr=-1 --out '" + d.file("u") + "'");
  CHECK(bad.exit_code == 2);
}

TEST_CASE("efftrain tune offers a GPT selective recompute as a third checkpointing placement") {
  test::TempDir d;
  // --time 0.001: the first candidate runs, the rest are listed as not run
  const auto r = test::run_efftrain("tune experiments/smoke/wikitext2_gpt_tiny.yaml --steps 3 --time 0.001 --out '" +
                                    d.file("t") + "'");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(test::read_text(d.file("t/tune.json")));
  std::vector<std::string> names;
  for (const auto& c : j["candidates"]) names.push_back(c["name"]);
  for (const char* n : {"bf16-selective-b16", "fp32-selective-b32", "bf16-sqrt-b16", "fp32-none-b32"}) {
    INFO(n);
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  }
  CHECK(names.size() == 1 + 2 * 3 * 2 - 1);  // as written = fp32-none-b16
}

TEST_CASE("on CUDA every tune candidate takes its task's same-function fast paths, and each is a valid override") {
  CHECK(tune::same_function_paths("wikitext2_gpt2", false).empty());
  const auto gpt = tune::same_function_paths("wikitext2_gpt2", true);
  const auto resnet = tune::same_function_paths("cifar10_resnet50", true);
  CHECK(std::find(gpt.begin(), gpt.end(), "task.model.fused_norm=true") != gpt.end());
  CHECK(std::find(gpt.begin(), gpt.end(), "task.model.fused_gelu=true") != gpt.end());
  CHECK(std::find(resnet.begin(), resnet.end(), "task.data.input_path=device") != resnet.end());
  CHECK(std::find(resnet.begin(), resnet.end(), "task.model.fused_bn_relu=true") != resnet.end());
  CHECK(std::find(resnet.begin(), resnet.end(), "task.model.bn_kernels=efftrain") != resnet.end());
  CHECK(std::find(resnet.begin(), resnet.end(), "task.model.conv_grads_in_place=true") != resnet.end());
  for (const auto* paths : {&gpt, &resnet}) CHECK(std::find(paths->begin(), paths->end(), "train.cuda_graph=true") != paths->end());
  CHECK(tune::same_function_paths("cifar10_small_cnn", true).empty());
  // every one loads on top of its seed (a misspelt key or value would be refused)
  CHECK_NOTHROW(config::load(test::source_path("experiments/seed/wikitext2_gpt2_baseline.yaml"), gpt));
  CHECK_NOTHROW(config::load(test::source_path("experiments/seed/cifar10_resnet50_baseline.yaml"), resnet));
}

TEST_CASE("run_estimate_s: max_steps of the measured step time, capped by max_time_s; none without a measurement") {
  tune::Measurement m;
  m.samples_per_s = 100;
  m.global_batch = 50;
  CHECK(*tune::run_estimate_s(m, 1000, 0) == 500.0);   // 1000 steps x 0.5 s
  CHECK(*tune::run_estimate_s(m, 1000, 120) == 120.0);  // the time limit comes first
  CHECK(*tune::run_estimate_s(m, 0, 90) == 90.0);       // no step limit
  m.outcome = "failed";
  CHECK(*tune::run_estimate_s(m, 1000, 60) == 60.0);
  CHECK_FALSE(tune::run_estimate_s(m, 1000, 0).has_value());
}

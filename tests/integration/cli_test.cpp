// End to end: the built binary, as a user runs it.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <nlohmann/json.hpp>

#include "efftrain/core/files.h"
#include "helpers.h"

using efftrain::test::read_text;
using efftrain::test::run_efftrain;
using efftrain::test::TempDir;
using Catch::Matchers::ContainsSubstring;
namespace files = efftrain::files;

namespace {
nlohmann::json load_json(const std::string& path) { return nlohmann::json::parse(read_text(path)); }
std::string last_line(const std::string& s) {
  auto t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  return t.substr(t.find_last_of('\n') + 1);
}
}  // namespace

TEST_CASE("quickstart trains, beats chance clearly and writes a complete report") {
  TempDir d;
  const auto out = d.file("run");
  auto r = run_efftrain("run experiments/quickstart.yaml --out '" + out + "'");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(last_line(r.out) == out + "/report.json");
  CHECK(files::exists(out + "/metrics.jsonl"));
  CHECK(files::exists(out + "/config.yaml"));
  CHECK_FALSE(files::exists(out + "/metrics.jsonl.partial"));

  const auto j = load_json(out + "/report.json");
  CHECK(j["schema"] == "efftrain.report/1");
  CHECK((j["status"] == "completed" || j["status"] == "target_reached"));
  CHECK(j["experiment"]["name"] == "quickstart");
  CHECK(j["experiment"]["config"]["train"]["batch_size"] == 64);
  CHECK(j["experiment"]["config_hash"].get<std::string>().size() == 16);
  for (const char* k : {"efftrain_version", "git_commit", "torch_version", "device_name", "hostname", "started_at"})
    CHECK_FALSE(j["environment"][k].get<std::string>().empty());
  CHECK(j["environment"]["world_size"] == 1);
  CHECK(j["environment"]["torch_version"].get<std::string>().rfind("2.11", 0) == 0);
  CHECK(j["model"]["parameters"].get<int64_t>() > 1000);
  CHECK(j["model"]["flops_per_sample"].get<double>() > 0);
  CHECK(j["result"]["steps"] == 120);
  CHECK(j["result"]["samples"] == 120 * 64);
  CHECK(j["result"]["train_s"].get<double>() > 0);
  CHECK(j["result"]["wall_s"].get<double>() >= j["result"]["train_s"].get<double>());
  CHECK(j["throughput"]["samples_per_s"].get<double>() > 0);
  CHECK(j["throughput"]["steady_steps"] == 117);  // 3 warm-up steps left out
  CHECK(j["memory"]["peak_allocated_bytes"].get<int64_t>() > 0);
  CHECK(j["mfu"].get<double>() > 0);
  CHECK(j["mfu"].get<double>() < 1);
  CHECK(j["quality"]["metric"] == "top1_accuracy");
  CHECK(j["quality"]["final"].get<double>() > 0.5);  // chance is 0.1
  CHECK(j["quality"]["curve"].size() == 3);
  for (const char* k : {"precision", "accumulation", "schedule", "optimizer", "grad_sync", "checkpointing"})
    CHECK(j["optimizations"].contains(k));
  CHECK(j["optimizations"]["optimizer"]["state_bytes"].get<int64_t>() == 2 * 4 * j["model"]["parameters"].get<int64_t>());
  if (j["status"] == "target_reached") CHECK(j["result"]["time_to_target_s"].is_number());
  else CHECK(j["result"]["time_to_target_s"].is_null());

  // metrics.jsonl: one JSON object per line, logged steps and evaluations.
  const auto lines = read_text(out + "/metrics.jsonl");
  size_t rows = 0, start = 0;
  while (start < lines.size()) {
    const auto end = lines.find('\n', start);
    REQUIRE(end != std::string::npos);
    const auto row = nlohmann::json::parse(lines.substr(start, end - start));
    CHECK(row.contains("step"));
    ++rows;
    start = end + 1;
  }
  CHECK(rows == 6 + 3);  // every 20 steps, and 3 evaluations
}

TEST_CASE("a reached target stops the run and sets time_to_target") {
  TempDir d;
  const auto out = d.file("run");
  auto r = run_efftrain("run experiments/quickstart.yaml --out '" + out +
                        "' --set train.target=0.3 --set train.stop_at_target=true --set train.eval_every=10");
  REQUIRE(r.exit_code == 0);
  const auto j = load_json(out + "/report.json");
  CHECK(j["status"] == "target_reached");
  CHECK(j["result"]["time_to_target_s"].get<double>() > 0);
  CHECK(j["result"]["steps"].get<int64_t>() < 120);
  CHECK(j["quality"]["final"].get<double>() >= 0.3);
}

TEST_CASE("eval_every_samples evaluates at the first step that completes each further N samples, whatever k") {
  TempDir d;
  const auto out = d.file("run");
  // Batch 16, fixed k = 2: 32 samples a step. N = 80 is passed at steps 3 (96), 5 (160), 8 (256), 10 (320);
  // step 12 is the last (always evaluated). eval_every=1 is what the samples cadence replaces.
  auto r = run_efftrain("run experiments/quickstart.yaml --device cpu --out '" + out +
                        "' --set train.max_steps=12 --set train.batch_size=16 --set accumulation.mode=fixed "
                        "--set accumulation.k=2 --set train.eval_every=1 --set train.eval_every_samples=80 "
                        "--set task.data.eval_limit=64");
  REQUIRE(r.exit_code == 0);
  const auto j = load_json(out + "/report.json");
  std::vector<int64_t> steps;
  for (const auto& p : j["quality"]["curve"]) steps.push_back(p["step"].get<int64_t>());
  CHECK(steps == std::vector<int64_t>{3, 5, 8, 10, 12});
}

TEST_CASE("overrides with --set reach the run and the report") {
  TempDir d;
  const auto out = d.file("run");
  auto r = run_efftrain("run experiments/quickstart.yaml --out '" + out +
                        "' --set train.max_steps=7 --set train.batch_size=16 --set optim.lr=0.002 --device cpu");
  REQUIRE(r.exit_code == 0);
  const auto j = load_json(out + "/report.json");
  CHECK(j["result"]["steps"] == 7);
  CHECK(j["result"]["samples"] == 7 * 16);
  CHECK(j["experiment"]["config"]["optim"]["lr"] == 0.002);
  CHECK(j["experiment"]["config"]["device"] == "cpu");
  CHECK(j["optimizations"]["schedule"]["lr"] == 0.002);
  CHECK(j["memory"]["snapshot"].is_null());
}

TEST_CASE("train.memory_snapshot_steps on the CPU warns, writes no snapshot and trains") {
  TempDir d;
  const auto out = d.file("run");
  auto r = run_efftrain("run experiments/quickstart.yaml --out '" + out +
                        "' --set train.max_steps=3 --set train.batch_size=16 --set train.memory_snapshot_steps=2 "
                        "--device cpu");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("train.memory_snapshot_steps: the allocator history is the CUDA caching allocator's") !=
        std::string::npos);
  CHECK(load_json(out + "/report.json")["memory"]["snapshot"].is_null());
  CHECK_FALSE(files::exists(out + "/memory_snapshot.rank0.pickle"));
}

TEST_CASE("a diverging run ends with status diverged and exit 3, report written") {
  TempDir d;
  const auto out = d.file("run");
  auto r = run_efftrain("run experiments/quickstart.yaml --out '" + out +
                        "' --set optim.lr=1e30 --set train.max_steps=40 --set output.log_every=5");
  CHECK(r.exit_code == 3);
  const auto j = load_json(out + "/report.json");
  CHECK(j["status"] == "diverged");
  CHECK_THAT(j["message"].get<std::string>(), ContainsSubstring("NaN"));
}

TEST_CASE("a required target that is not reached exits 3") {
  TempDir d;
  const auto out = d.file("run");
  auto r = run_efftrain("run experiments/quickstart.yaml --out '" + out +
                        "' --set train.max_steps=3 --set train.target=0.99 --set train.require_target=true");
  CHECK(r.exit_code == 3);
  CHECK(load_json(out + "/report.json")["status"] == "failed");
}

TEST_CASE("validate prints the resolved config, which validates again to the same text") {
  TempDir d;
  auto r = run_efftrain("validate experiments/quickstart.yaml --set train.max_steps=9");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, ContainsSubstring("max_steps: 9"));
  CHECK_THAT(r.out, ContainsSubstring("name: quickstart"));
  const auto resolved = d.write("resolved.yaml", r.out);
  auto again = run_efftrain("validate '" + resolved + "'");
  REQUIRE(again.exit_code == 0);
  CHECK(again.out == r.out);
}

TEST_CASE("bad configs and bad command lines exit 2 with one clear line and write nothing") {
  TempDir d;
  const auto good = efftrain::test::source_path("experiments/quickstart.yaml");
  d.write("typo.yaml", "name: t\ntask: {name: synthetic_cnn}\ntrain:\n  bach_size: 4\n");
  d.write("badtype.yaml", "name: t\ntask: {name: synthetic_cnn}\noptim: {lr: fast}\n");
  d.write("badyaml.yaml", "name: t\ntask: [\n");
  d.write("cycle.yaml", "name: t\nbase: cycle.yaml\ntask: {name: synthetic_cnn}\n");
  d.write("exists/file.txt", "x");
  struct Case {
    std::string args;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"run " + d.file("typo.yaml"), "did you mean 'batch_size'"},
      {"run " + d.file("badtype.yaml"), "optim.lr: expected a number > 0, found 'fast'"},
      {"run " + d.file("badyaml.yaml"), "malformed YAML"},
      {"run " + d.file("cycle.yaml"), "cycle"},
      {"run " + d.file("nope.yaml"), "not found"},
      {"run " + d.file(""), "directory"},
      {"run '" + good + "' --set train.max_steps=-1", "train.max_steps"},
      {"run '" + good + "' --set precision.mode=fp8", "precision.mode"},
      {"run '" + good + "' --set bogus", "expected key.path=value"},
      {"run '" + good + "' --device tpu", "device: expected one of auto, cpu, cuda"},
      {"run '" + good + "' --nproc zero", "distributed.world_size"},
      {"run '" + good + "' --out " + d.file("exists"), "not empty"},
      {"run", "experiment is required"},
      {"run '" + good + "' --no-such-flag", "--no-such-flag"},
      {"frobnicate", "frobnicate"},
      {"compare " + d.file("typo.yaml"), "not valid JSON"},
      {"validate " + d.file("typo.yaml"), "train.bach_size"},
      {"", "subcommand"},
  };
  for (const auto& c : cases) {
    auto r = run_efftrain(c.args, d.path());
    INFO("efftrain " << c.args << "\nstderr: " << r.err);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, ContainsSubstring(c.expect));
    CHECK_THAT(r.err, ContainsSubstring("efftrain: error:"));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
  CHECK_FALSE(files::exists(d.file("runs")));  // nothing was written for any of them
}

TEST_CASE("list shows every component kind; --version and --help exit 0") {
  auto r = run_efftrain("list");
  REQUIRE(r.exit_code == 0);
  for (const char* k : {"task:", "synthetic_cnn", "precision:", "fp32", "optimizer:", "adamw", "schedule:",
                        "accumulation:", "grad_sync:", "checkpointing:"})
    CHECK_THAT(r.out, ContainsSubstring(k));
  auto v = run_efftrain("--version");
  CHECK(v.exit_code == 0);
  CHECK_THAT(v.out, ContainsSubstring("efftrain 0."));
  for (const char* sub : {"run", "validate", "list", "compare"}) {
    auto h = run_efftrain(std::string(sub) + " --help");
    CHECK(h.exit_code == 0);
    CHECK_THAT(h.out, ContainsSubstring("Example: efftrain"));
  }
}

TEST_CASE("compare prints a Markdown table with ratios to the first report") {
  TempDir d;
  REQUIRE(run_efftrain("run experiments/quickstart.yaml --out '" + d.file("a") + "' --set train.max_steps=8").exit_code == 0);
  REQUIRE(run_efftrain("run experiments/quickstart.yaml --out '" + d.file("b") +
                       "' --set train.max_steps=8 --set train.batch_size=32").exit_code == 0);
  auto r = run_efftrain("compare '" + d.file("a/report.json") + "' '" + d.file("b/report.json") + "'");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, ContainsSubstring("| run | status |"));
  CHECK_THAT(r.out, ContainsSubstring("samples/s"));
  CHECK_THAT(r.out, ContainsSubstring("x)"));
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 4 + 1 + 4);  // per report, blank line, per configuration
  CHECK_THAT(r.out, ContainsSubstring("| configuration | runs |"));
}

TEST_CASE("compare groups seeds into one configuration with median and spread, against the first") {
  TempDir d;
  const std::string common = "run experiments/quickstart.yaml --device cpu --set train.max_steps=30 --set train.eval_every=15";
  for (const char* seed : {"0", "1", "2"})
    REQUIRE(run_efftrain(common + " --set train.seed=" + seed + " --out '" + d.file(std::string("base") + seed) + "'")
                .exit_code == 0);
  REQUIRE(run_efftrain(common + " --set precision.mode=bf16 --out '" + d.file("bf16") + "'").exit_code == 0);
  auto r = run_efftrain("compare '" + d.file("base0/report.json") + "' '" + d.file("base1/report.json") + "' '" +
                        d.file("base2/report.json") + "' '" + d.file("bf16/report.json") + "'");
  REQUIRE(r.exit_code == 0);
  const auto at = r.out.find("| configuration |");
  REQUIRE(at != std::string::npos);
  const std::string grouped = r.out.substr(at);
  CHECK(std::count(grouped.begin(), grouped.end(), '\n') == 4);  // header, rule, two configurations
  // Labelled by name and overrides (the seed left out); three seeds in one row, with a spread.
  CHECK_THAT(grouped, ContainsSubstring("| quickstart train.max_steps=30 train.eval_every=15 device=cpu | 3 | "));
  CHECK_THAT(grouped, ContainsSubstring("–"));
  CHECK_THAT(grouped, ContainsSubstring("precision.mode=bf16 device=cpu | 1 | "));
  CHECK_THAT(grouped, ContainsSubstring("| 1.00x |"));  // the first configuration against itself
}

TEST_CASE("compare gives no quality delta between configurations that both stopped at the target") {
  TempDir d;
  const std::string common = "run experiments/quickstart.yaml --device cpu --set train.target=0.3 "
                             "--set train.stop_at_target=true --set train.eval_every=10";
  REQUIRE(run_efftrain(common + " --out '" + d.file("a") + "'").exit_code == 0);
  REQUIRE(run_efftrain(common + " --set optim.lr=0.002 --out '" + d.file("b") + "'").exit_code == 0);
  REQUIRE(run_efftrain(common + " --set train.target=0.99 --set train.max_steps=20 --out '" + d.file("c") + "'")
              .exit_code == 0);
  REQUIRE(load_json(d.file("a") + "/report.json")["status"] == "target_reached");
  REQUIRE(load_json(d.file("b") + "/report.json")["status"] == "target_reached");
  auto r = run_efftrain("compare '" + d.file("a/report.json") + "' '" + d.file("b/report.json") + "' '" +
                        d.file("c/report.json") + "'");
  REQUIRE(r.exit_code == 0);
  const std::string grouped = r.out.substr(r.out.find("| configuration |"));
  CHECK(std::count(grouped.begin(), grouped.end(), '\n') == 5);  // header, rule, three configurations
  // The quality-delta cell (the tenth) of the row whose label holds `label`.
  auto delta_of = [&](const std::string& label) {
    const auto row_at = grouped.find(label);
    REQUIRE(row_at != std::string::npos);
    std::string row = grouped.substr(row_at, grouped.find('\n', row_at) - row_at);
    for (int i = 0; i < 9; ++i) row = row.substr(row.find(" | ") + 3);
    return row.substr(0, row.find(" | "));
  };
  // b against a: both stopped at 0.3, so no delta; c ran to its step limit, so its delta stands.
  CHECK(delta_of("optim.lr=0.002") == "— (both stopped at the target)");
  const std::string c = delta_of("train.target=0.99");
  CHECK(c.size() > 1);
  CHECK((c[0] == '+' || c[0] == '-'));
  CHECK(c.back() == '%');
}

TEST_CASE("docs/config-reference.md is what validate --reference prints") {
  auto r = run_efftrain("validate --reference");
  REQUIRE(r.exit_code == 0);
  const auto doc = read_text(efftrain::test::source_path("docs/config-reference.md"));
  CHECK(doc.find(r.out) != std::string::npos);
}

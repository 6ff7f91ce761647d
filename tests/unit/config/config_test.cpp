#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <nlohmann/json.hpp>

#include "efftrain/config/config.h"
#include "efftrain/core/error.h"
#include "helpers.h"

using namespace efftrain;
using Catch::Matchers::ContainsSubstring;

namespace {
const char* kMinimal = "name: t\ntask:\n  name: synthetic_cnn\n";

std::string error_of(const std::string& path, const std::vector<std::string>& overrides = {}) {
  try {
    config::load(path, overrides);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("a minimal experiment gets the documented defaults") {
  test::TempDir d;
  auto cfg = config::load(d.write("x.yaml", kMinimal));
  CHECK(cfg.name == "t");
  CHECK(cfg.task.name == "synthetic_cnn");
  CHECK(cfg.optim.name == "adamw");
  CHECK(cfg.optim.lr == 1e-4);
  CHECK(cfg.optim.betas == std::vector<double>{0.9, 0.999});
  CHECK(cfg.optim.weight_decay == 0.01);
  CHECK(cfg.precision.mode == "fp32");
  CHECK_FALSE(cfg.precision.tf32);
  CHECK(cfg.accumulation.mode == "none");
  CHECK(cfg.schedule.name == "constant");
  CHECK_FALSE(cfg.train.target.has_value());
}

TEST_CASE("base files compose: later wins, maps merge deeply, the experiment wins last") {
  test::TempDir d;
  d.write("configs/a.yaml", "optim:\n  lr: 0.1\n  weight_decay: 0.5\ntrain:\n  batch_size: 8\n");
  d.write("configs/b.yaml", "base: a.yaml\noptim:\n  lr: 0.2\n");
  const auto p = d.write("exp/x.yaml",
                         "name: t\nbase: [configs/b.yaml]\ntask: {name: synthetic_cnn}\ntrain:\n  max_steps: 7\n");
  auto cfg = config::load(p);
  CHECK(cfg.optim.lr == 0.2);            // b overrides a
  CHECK(cfg.optim.weight_decay == 0.5);  // kept from a: deep merge
  CHECK(cfg.train.batch_size == 8);
  CHECK(cfg.train.max_steps == 7);
}

TEST_CASE("overrides parse their value as YAML and win over files") {
  test::TempDir d;
  const auto p = d.write("x.yaml", kMinimal);
  auto cfg = config::load(p, {"optim.lr=3e-4", "train.target=0.9", "optim.betas=[0.8, 0.95]",
                              "task.model={width: 4, depth: 1}"});
  CHECK(cfg.optim.lr == 3e-4);
  CHECK(cfg.train.target == 0.9);
  CHECK(cfg.optim.betas == std::vector<double>{0.8, 0.95});
  CHECK(cfg.task.model.width == 4);
  CHECK(cfg.task.model.depth == 1);
}

TEST_CASE("the resolved YAML round-trips to the same config") {
  test::TempDir d;
  auto cfg = config::load(d.write("x.yaml", kMinimal), {"train.target=0.75", "description='a: b # c'"});
  const auto again = config::load(d.write("resolved.yaml", config::to_yaml(cfg)));
  CHECK(config::to_json(cfg) == config::to_json(again));
  CHECK(config::config_hash(cfg) == config::config_hash(again));
  auto other = config::load(d.write("y.yaml", kMinimal), {"optim.lr=0.5"});
  CHECK(config::config_hash(cfg) != config::config_hash(other));
}

TEST_CASE("bad configs give one line with file:line:col, the key, what was expected and found") {
  test::TempDir d;
  struct Case {
    std::string yaml;
    std::vector<std::string> overrides;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"name: t\ntask: {name: synthetic_cnn}\ntrain:\n  bach_size: 4\n", {},
       {"x.yaml:4:14", "train.bach_size", "unknown key", "did you mean 'batch_size'"}},
      {"name: t\ntask: {name: synthetic_cnn}\ntrain:\n  batch_size: many\n", {},
       {"x.yaml:4:15", "train.batch_size", "expected an integer >= 1", "found 'many'"}},
      {"name: t\ntask: {name: synthetic_cnn}\ntrain:\n  batch_size: 0\n", {},
       {"train.batch_size", "expected an integer >= 1, found '0'"}},
      {"name: t\ntask: {name: synthetic_cnn}\noptim:\n  lr: -1\n", {}, {"optim.lr", "expected a number > 0"}},
      {"name: t\ntask: {name: synthetic_cnn}\nprecision:\n  mode: fp61\n", {},
       {"precision.mode", "expected one of", "found 'fp61'", "did you mean"}},
      {"task: {name: synthetic_cnn}\n", {}, {"name", "required key is missing"}},
      {"name: t\n", {}, {"task.name", "required key is missing"}},
      {"name: t\ntask: {name: resnet9000}\n", {}, {"task.name", "found 'resnet9000'"}},
      {"name: t\ntask: {name: synthetic_cnn}\ntrain: [1, 2]\n", {}, {"train", "expected a map of settings"}},
      {"name: t\ntask: {name: synthetic_cnn}\ntrain:\n  stop_at_target: maybe\n", {},
       {"train.stop_at_target", "expected true or false", "found 'maybe'"}},
      {"name: t\ntask: {name: synthetic_cnn}\noptim:\n  betas: [0.9]\n", {}, {"optim.betas", "expected 2 numbers"}},
      {"name: t\ntask: {name: synthetic_cnn}\noptim:\n  betas: [0.9, 1.5]\n", {}, {"optim.betas[1]"}},
      {"name: t\ntask: {name: synthetic_cnn}\ntrain:\n  max_steps: 0\n", {}, {"train.max_steps", "expected a step limit"}},
      {"name: t\ntask: {name: synthetic_cnn}\ntrain: {batch_size: 4\n", {}, {"x.yaml:", "malformed YAML"}},
      {"name: t\ntask: {name: synthetic_cnn}\ntrain:\n  batch_size: 4\n  batch_size: 5\n", {}, {"duplicate key"}},
      {"name: t\ntask: {name: synthetic_cnn}\nbase: missing.yaml\n", {}, {"x.yaml:3:7", "missing.yaml", "not found"}},
      {"name: t\ntask: {name: synthetic_cnn}\ntrain:\n  batch_size: \"4\"\n", {}, {"quoted string"}},
      {kMinimal, {"train.batch_size=abc"}, {"--set train.batch_size=abc", "expected an integer"}},
      {kMinimal, {"train.nope=1"}, {"--set train.nope=1", "unknown key"}},
      {kMinimal, {"no_equals_sign"}, {"expected key.path=value"}},
      {"name: t\ntask: {name: synthetic_cnn}\ntrain:\n  require_target: true\n", {}, {"train.target to be set"}},
      {"name: t\ntask: {name: synthetic_cnn}\nschedule:\n  name: warmup_cosine\n  warmup: 500\ntrain:\n  max_steps: 100\n",
       {}, {"schedule.warmup", "at most the schedule length 100"}},
      {kMinimal, {"train.memory_snapshot_steps=-1"}, {"train.memory_snapshot_steps", "expected an integer >= 0"}},
      {"name: t\ntask:\n  name: cifar10_resnet50\n  model: {recompute_bn_relu: true, fused_bn_relu: true}\n", {},
       {"task.model.recompute_bn_relu", "needs task.model.fused_bn_relu true, bn_kernels efftrain"}},
      {"", {}, {"x.yaml", "empty"}},
      {"- just\n- a list\n", {}, {"expected a map of sections"}},
  };
  for (const auto& c : cases) {
    const auto p = d.write("x.yaml", c.yaml);
    const std::string err = error_of(p, c.overrides);
    INFO("yaml: " << c.yaml << "\nerror: " << err);
    CHECK(err.find('\n') == std::string::npos);
    for (const auto& e : c.expect) CHECK_THAT(err, ContainsSubstring(e));
  }
}

TEST_CASE("a base cycle is reported with the chain") {
  test::TempDir d;
  d.write("a.yaml", "base: b.yaml\n");
  d.write("b.yaml", "base: a.yaml\n");
  const auto p = d.write("x.yaml", "name: t\nbase: a.yaml\ntask: {name: synthetic_cnn}\n");
  const auto err = error_of(p);
  CHECK_THAT(err, ContainsSubstring("cycle"));
  CHECK_THAT(err, ContainsSubstring("a.yaml -> "));
}

TEST_CASE("a missing experiment file is a user error naming it") {
  CHECK_THAT(error_of("/no/such/experiment.yaml"), ContainsSubstring("/no/such/experiment.yaml"));
}

TEST_CASE("the config reference lists every section and key") {
  const auto md = config::reference_markdown();
  for (const char* k : {"`train.batch_size`", "`optim.betas`", "`precision.loss_scale_window`",
                        "`distributed.grad_sync`", "`task.data.root`", "`output.peak_tflops`"})
    CHECK_THAT(md, ContainsSubstring(k));
}

TEST_CASE("config text that is not UTF-8 is a user error naming the file or the override (fuzzer finding)") {
  test::TempDir d;
  const std::string bad = d.write("bad.yaml", std::string(kMinimal) + "description: caf\xe9\n");
  CHECK_THAT(error_of(bad), ContainsSubstring("bad.yaml: not UTF-8 text (byte 52 is 0xe9)"));
  const std::string ok = d.write("ok.yaml", kMinimal);
  CHECK_THAT(error_of(ok, {"description=caf\xc3"}), ContainsSubstring("--set: not UTF-8 text"));
  CHECK(error_of(ok, {"description=caf\xc3\xa9"}) == "(no error)");
  // Inputs the config fuzzer (tests/fuzz/config_fuzz.cpp) found: they passed validation and
  // then threw from the JSON writer (the second through bytes yaml-cpp made of NULs).
  CHECK_THAT(error_of(test::source_path("tests/fuzz/regressions/config-invalid-utf8.yaml")),
             ContainsSubstring("not UTF-8 text"));
  CHECK_THAT(error_of(test::source_path("tests/fuzz/regressions/config-escape-not-utf8.yaml")),
             ContainsSubstring("not UTF-8 text"));
  const std::string escaped = d.write("escaped.yaml", std::string(kMinimal) + "description: \"caf\\xe9\"\n");
  CHECK(error_of(escaped) == "(no error)");  // YAML's \xe9 is U+00E9, written as UTF-8
}

// The seed experiments' CPU smoke versions and their ablations, end to end: CI reproduces
// baseline vs optimized on every change, and each ablation really switches what ran.
#include <catch2/catch_test_macros.hpp>

#include <cstdlib>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "helpers.h"

using namespace efftrain::test;
using nlohmann::json;

namespace {

json run_report(const std::string& experiment, const std::string& extra = "") {
  TempDir d;
  const auto r = run_efftrain("run " + experiment + extra + " --out '" + d.file("run") + "'");
  INFO(experiment << "\n" << r.err);
  REQUIRE(r.exit_code == 0);
  return json::parse(read_text(d.file("run/report.json")));
}

// What each ablation switch changes in a report.
const std::map<std::string, std::function<json(const json&)>> kSwitch = {
    {"precision", [](const json& j) { return j["optimizations"]["precision"]["mode"]; }},
    {"accumulation", [](const json& j) { return j["optimizations"]["accumulation"]["mode"]; }},
    {"schedule", [](const json& j) { return j["optimizations"]["schedule"]["name"]; }},
    {"checkpointing", [](const json& j) { return j["optimizations"]["checkpointing"]["policy"]; }},
    {"optimizer", [](const json& j) { return j["optimizations"]["optimizer"]["name"]; }},
    {"fast_paths",
     [](const json& j) {
       return json::array({j["model"].value("input_path", ""), j["model"].value("channels_last", false),
                           j["model"].value("attention", ""), j["model"].value("vocab_padded", 0),
                           j["model"].value("fused_loss", false), j["model"].value("fused_norm", false),
                           j["model"].value("fused_gelu", false),
                           j["optimizations"]["cuda_graph"]["reason"]});
     }},
    {"zero2", [](const json& j) { return j["experiment"]["config"]["distributed"]["auto_sync"]; }},
};

}  // namespace

TEST_CASE("the ablation files are what scripts/make-ablations.py writes, and every seed and ablation validates") {
  TempDir d;
  REQUIRE(std::system(("python3 '" EFFTRAIN_SOURCE_DIR "/scripts/make-ablations.py' '" + d.path() + "'").c_str()) == 0);
  for (const char* folder : {"experiments/ablations", "experiments/smoke/ablations"})
    for (const char* task : {"cifar10_resnet50", "wikitext2_gpt2"})
      for (const auto& [component, f] : kSwitch)
        for (const char* kind : {"_optimized_without_", "_baseline_with_"}) {
          const std::string rel = std::string(folder) + "/" + task + kind + component + ".yaml";
          INFO(rel);
          CHECK(read_text(d.file(rel)) == read_text(source_path(rel)));
          CHECK_FALSE(read_text(d.file(rel)).empty());
          if (std::string(folder) == "experiments/ablations") CHECK(run_efftrain("validate " + rel).exit_code == 0);
        }
  for (const char* seed : {"cifar10_resnet50_baseline", "cifar10_resnet50_optimized", "cifar10_resnet50_optimized_bf16",
                           "wikitext2_gpt2_baseline", "wikitext2_gpt2_optimized", "wikitext2_gpt2_optimized_bf16"}) {
    INFO(seed);
    CHECK(run_efftrain(std::string("validate experiments/seed/") + seed + ".yaml").exit_code == 0);
  }
}

TEST_CASE("smoke seeds: baseline and optimized both train, and the optimized run has every component on") {
  for (const char* task : {"cifar10_resnet50", "wikitext2_gpt2"}) {
    const json base = run_report(std::string("experiments/smoke/seed/") + task + "_baseline.yaml");
    const json opt = run_report(std::string("experiments/smoke/seed/") + task + "_optimized.yaml");
    for (const json* j : {&base, &opt}) {
      CHECK(((*j)["status"] == "completed" || (*j)["status"] == "target_reached"));
      CHECK((*j)["quality"]["final"].is_number());
      CHECK((*j)["quality"]["curve"].size() >= 1);
      CHECK((*j)["throughput"]["samples_per_s"].get<double>() > 0);
    }
    CHECK(base["optimizations"]["precision"]["mode"] == "fp32");
    CHECK(opt["optimizations"]["precision"]["mode"] == "bf16");
    CHECK(base["optimizations"]["accumulation"]["mode"] == "none");
    CHECK(opt["optimizations"]["accumulation"]["mode"] == "adaptive");
    CHECK(opt["optimizations"]["schedule"]["name"] == "warmup_cosine");
    CHECK(opt["optimizations"]["optimizer"]["name"] == "adamw_fused");
    CHECK(base["optimizations"]["checkpointing"]["segments"].empty());
    CHECK_FALSE(opt["optimizations"]["checkpointing"]["segments"].empty());
    for (const auto& [component, value] : kSwitch) CHECK((component == "zero2" || value(base) != value(opt)));
  }
}

TEST_CASE("smoke ablations: each one switches exactly its component") {
  const std::string quick = " --set train.max_steps=3 --set train.eval_every=0";
  for (const char* task : {"cifar10_resnet50", "wikitext2_gpt2"}) {
    const json base = run_report(std::string("experiments/smoke/seed/") + task + "_baseline.yaml", quick);
    const json opt = run_report(std::string("experiments/smoke/seed/") + task + "_optimized.yaml", quick);
    for (const auto& [component, value] : kSwitch) {
      INFO(task << " " << component);
      const json without = run_report(std::string("experiments/smoke/ablations/") + task + "_optimized_without_" +
                                      component + ".yaml", quick);
      const json with = run_report(std::string("experiments/smoke/ablations/") + task + "_baseline_with_" + component +
                                   ".yaml", quick);
      CHECK(value(without) == value(base));
      CHECK(value(with) == value(opt));
      // Everything else stays as in the seed it came from.
      for (const auto& [other, other_value] : kSwitch) {
        if (other == component || (component == "schedule" && other == "optimizer")) continue;
        INFO("unchanged: " << other);
        CHECK(other_value(without) == other_value(opt));
        CHECK(other_value(with) == other_value(base));
      }
    }
  }
}

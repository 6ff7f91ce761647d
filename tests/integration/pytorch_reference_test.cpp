// scripts/pytorch_reference.py: the PyTorch side of the comparison writes reports that
// `efftrain compare` reads (CPU, tiny steps; the real comparison runs on the GPU).
#include <catch2/catch_test_macros.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "efftrain/core/files.h"
#include "helpers.h"

using namespace efftrain::test;

TEST_CASE("the PyTorch reference runner writes compare-ready reports for both tasks") {
  const char* cache = std::getenv("EFFTRAIN_CACHE");
  const std::string python =
      (cache ? std::string(cache) : std::string(std::getenv("HOME")) + "/.cache/efftrain") + "/venv/bin/python3";
  if (!efftrain::files::exists(python)) SKIP("no torch virtualenv at " + python);
  TempDir d;
  const std::string script = "'" EFFTRAIN_SOURCE_DIR "/scripts/pytorch_reference.py'";
  const std::string common = " --device cpu --steps 2 --warmup 1 --precision fp32";
  for (const std::string task : {"resnet50", "gpt2"}) {
    const std::string extra = task == "gpt2" ? " --batch 1 --seq-len 16" : " --batch 2 --channels-last";
    const int status = std::system((python + " " + script + " --task " + task + common + extra + " --out '" +
                                    d.file(task + "/report.json") + "' > '" + d.file(task + ".log") + "' 2>&1")
                                       .c_str());
    INFO(read_text(d.file(task + ".log")));
    REQUIRE(WEXITSTATUS(status) == 0);
    const auto j = nlohmann::json::parse(read_text(d.file(task + "/report.json")));
    CHECK(j["schema"] == "efftrain.report/1");
    CHECK(j["status"] == "completed");
    CHECK(j["throughput"]["samples_per_s"].get<double>() > 0);
    CHECK(j["environment"]["runner"] == "pytorch");
    // The same models as efftrain's: ResNet-50 (CIFAR, 10 classes) and GPT-2 small.
    CHECK(j["model"]["parameters"] == (task == "gpt2" ? 124439808 : 23520842));
  }
  const auto r = run_efftrain("compare '" + d.file("resnet50/report.json") + "' '" + d.file("gpt2/report.json") + "'");
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("pytorch-resnet50-fp32") != std::string::npos);
  CHECK(r.out.find("pytorch-gpt2-fp32") != std::string::npos);
}

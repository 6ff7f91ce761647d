// scripts/plot.py: readable PNGs from reports (skipped where matplotlib could not be installed).
#include <catch2/catch_test_macros.hpp>

#include <cstdlib>
#include <sys/wait.h>

#include "helpers.h"

using namespace efftrain::test;

TEST_CASE("plot.py draws the metric curves and the throughput/memory bars of a baseline and a variant") {
  const char* cache = std::getenv("EFFTRAIN_CACHE");
  const std::string plot_python =
      read_text((cache ? std::string(cache) : std::string(std::getenv("HOME")) + "/.cache/efftrain") + "/plot-python");
  if (plot_python.empty()) SKIP("no matplotlib on this machine (scripts/setup.sh could not install it)");
  TempDir d;
  const std::string common = "run experiments/quickstart.yaml --device cpu --set train.max_steps=20 --set train.eval_every=10";
  REQUIRE(run_efftrain(common + " --out '" + d.file("base") + "'").exit_code == 0);
  REQUIRE(run_efftrain(common + " --set precision.mode=bf16 --out '" + d.file("bf16") + "'").exit_code == 0);
  const std::string cmd = "python3 '" EFFTRAIN_SOURCE_DIR "/scripts/plot.py' -o '" + d.file("plots") + "' '" +
                          d.file("base/report.json") + "' '" + d.file("bf16/report.json") + "' > '" + d.file("log") +
                          "' 2>&1";
  const int status = std::system(cmd.c_str());
  INFO(read_text(d.file("log")));
  REQUIRE(WEXITSTATUS(status) == 0);
  for (const char* png : {"curves.png", "bars.png"}) {
    const std::string bytes = read_text(d.file(std::string("plots/") + png));
    INFO(png);
    CHECK(bytes.size() > 10000);
    CHECK(bytes.substr(1, 3) == "PNG");
  }
  CHECK(read_text(d.file("plots/scaling.png")).empty());  // one world size: no scaling plot
  // A bad argument is a one-line error, not a traceback.
  const int bad = std::system(("python3 '" EFFTRAIN_SOURCE_DIR "/scripts/plot.py' -o '" + d.file("p2") +
                               "' /no/such/report.json > /dev/null 2>&1").c_str());
  CHECK(WEXITSTATUS(bad) != 0);
}

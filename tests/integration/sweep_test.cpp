// scripts/sweep.sh: a matrix of overrides x seeds, failures marked and passed over, one folder.
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cstdlib>
#include <sys/wait.h>

#include "helpers.h"

using namespace efftrain::test;

TEST_CASE("sweep runs the override matrix for every seed, marks failed runs and ends with the compare table") {
  TempDir d;
  const std::string cmd = "cd '" EFFTRAIN_SOURCE_DIR "' && EFFTRAIN='" EFFTRAIN_BIN "' scripts/sweep.sh -o '" +
                          d.file("sweep") + "' -s 0,1 -m optim.lr=0.003,-1 experiments/quickstart.yaml -- --device cpu "
                          "--set train.max_steps=4 --set train.eval_every=0 > '" + d.file("log") + "' 2>&1";
  const int status = std::system(cmd.c_str());
  INFO(read_text(d.file("log")));
  CHECK(WEXITSTATUS(status) == 1);  // some runs failed, the rest ran
  const std::string index = read_text(d.file("sweep/index.tsv"));
  CHECK(std::count(index.begin(), index.end(), '\n') == 5);  // header + 2 values x 2 seeds
  CHECK(index.find("quickstart__optim.lr=0.003__seed=0\texperiments/quickstart.yaml\toptim.lr=0.003\t0\t0\tcompleted") !=
        std::string::npos);
  CHECK(index.find("quickstart__optim.lr=-1__seed=1\texperiments/quickstart.yaml\toptim.lr=-1\t1\t2\tno report") !=
        std::string::npos);
  CHECK(read_text(d.file("sweep/quickstart__optim.lr=0.003__seed=1/report.json")).find("\"seed\": 1") !=
        std::string::npos);
  const std::string table = read_text(d.file("sweep/compare.md"));
  const std::string per_run = table.substr(0, table.find("\n\n") + 1);
  CHECK(std::count(per_run.begin(), per_run.end(), '\n') == 4);  // header, rule, the two completed runs
  CHECK(table.find(" | 2 | ") != std::string::npos);  // the two seeds of lr 0.003 as one configuration
}

TEST_CASE("sweep refuses bad arguments with exit 2") {
  TempDir d;
  for (const std::string& args : {std::string("-m precision.mode experiments/quickstart.yaml"),
                                  std::string("-s one experiments/quickstart.yaml"), std::string("no/such.yaml"),
                                  std::string("--bogus experiments/quickstart.yaml")}) {
    const std::string cmd = "cd '" EFFTRAIN_SOURCE_DIR "' && EFFTRAIN='" EFFTRAIN_BIN "' scripts/sweep.sh -o '" +
                            d.file("s") + "' " + args + " > /dev/null 2>&1";
    INFO(args);
    CHECK(WEXITSTATUS(std::system(cmd.c_str())) == 2);
  }
}

// `efftrain run`: config -> components -> Trainer::fit -> report.json, metrics.jsonl, config.yaml.
#pragma once

#include <string>
#include <vector>

namespace efftrain {

struct RunOptions {
  std::string experiment;              // path to the YAML
  std::vector<std::string> overrides;  // --set a.b=v (CLI flags become overrides too)
  std::string out_dir;                 // empty = config output.dir, else runs/<name>-<UTC>
  bool overwrite = false;
};

struct RunOutcome {
  std::string report_path;
  std::string status;
  int exit_code = 0;
};

// Runs one experiment in this process. UserError for bad input (nothing written);
// a failed training run still writes its report and returns exit code 3.
RunOutcome run_experiment(const RunOptions& opts);

}  // namespace efftrain

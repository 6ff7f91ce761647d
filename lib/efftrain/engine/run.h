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
  // A checkpoint folder, a run folder (its newest checkpoint), or "auto": the newest valid
  // checkpoint in this run's output folder, or a fresh start when there is none.
  std::string resume;
  // Launcher: restart every worker from the newest checkpoint after a failure, up to this many
  // times (as torchrun's --max-restarts). 0 = none.
  int max_restarts = 0;
  // The command line that started this process: what the launcher re-executes for each worker
  // when the run needs several processes and this one is not a worker yet.
  std::vector<std::string> worker_argv;
};

struct RunOutcome {
  std::string report_path;
  std::string status;
  int exit_code = 0;
};

// Runs one experiment. With distributed.world_size > 1 and no worker environment (RANK,
// WORLD_SIZE, ...), this process becomes the launcher of that many workers; a worker (started
// by it, torchrun or Slurm) trains its share and rank 0 writes the files. UserError for bad
// input (nothing written); a failed training run still writes its report and returns exit
// code 3; a failed worker makes the job exit with that worker's code (after max_restarts
// restarts from the newest checkpoint, when asked for).
RunOutcome run_experiment(const RunOptions& opts);

}  // namespace efftrain

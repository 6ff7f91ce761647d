// engine::Trainer: the training loop of design §1, on components it does not look inside.
#pragma once

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "efftrain/batching/accumulation.h"
#include "efftrain/config/config.h"
#include "efftrain/dist/grad_sync.h"
#include "efftrain/memory/checkpointing.h"
#include "efftrain/optim/optimizer.h"
#include "efftrain/precision/precision.h"
#include "efftrain/tasks/task.h"

namespace efftrain {

namespace dist {
class Comm;
}

struct Components {
  std::unique_ptr<Task> task;
  std::unique_ptr<Precision> precision;
  std::unique_ptr<Accumulation> accumulation;
  std::unique_ptr<Schedule> schedule;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<GradSync> grad_sync;
  std::unique_ptr<Checkpointing> checkpointing;
};

struct TrainResult {
  std::string status = "completed";  // completed | target_reached | diverged
  std::string message;
  int64_t steps = 0;
  int64_t samples = 0;  // over all ranks
  int64_t tokens = 0;
  double train_s = 0;  // time in training steps, evaluation and checkpoint writing excluded
  double eval_s = 0;
  double checkpoint_s = 0;  // writing checkpoints
  int64_t checkpoints_written = 0;
  std::string last_checkpoint;
  // A resumed run: the checkpoint's step and loop clock (the clocks above continue from it).
  std::optional<int64_t> resumed_step;
  double resumed_loop_s = 0;
  double loop_s = 0;   // first step to the end, evaluation included
  std::optional<double> time_to_target_s;
  // Steady state (after train.timing_warmup_steps): what throughput is computed from.
  int64_t steady_steps = 0;
  int64_t steady_samples = 0;
  int64_t steady_tokens = 0;
  double steady_s = 0;
  int64_t window_restarts = 0;  // train.timing_restart_on_k_change: restarts after a change of k
  std::optional<double> final_metric, best_metric;
  double final_train_loss = 0;
  nlohmann::json curve = nlohmann::json::array();
  // train.cuda_graph: what was captured and replayed, or why not (StepGraph::report()).
  nlohmann::json cuda_graph = {{"enabled", false}, {"reason", "train.cuda_graph is off"}};
  // policy.mode auto: the decisions and their numbers (OnlinePolicy::report()).
  nlohmann::json policy = {{"mode", "none"}};
  // train.profile_start_step: StepProfiler::report().
  nlohmann::json profile = {{"enabled", false}};
  // train.memory_snapshot_steps: MemorySnapshot::report().
  nlohmann::json memory_snapshot = nullptr;
};

struct TrainerOptions {
  std::string metrics_path;      // metrics.jsonl stream (appended to); empty = none
  std::string checkpoints_root;  // where checkpoints go (output.* says when); empty = none
  std::string resume_from;       // a verified checkpoint folder to continue from; empty = start
  std::string profile_path;      // train.profile_start_step: this rank's trace file
  std::string memory_snapshot_path;  // train.memory_snapshot_steps: this rank's snapshot file
  // For policy.mode auto: the probe of each block's activation memory and the segments in use.
  std::vector<BlockMemory> block_memory;
  std::vector<std::pair<int64_t, int64_t>> segments;
};

class Trainer {
 public:
  // `comm`: the process group of a multi-process run (null for one process); only rank 0
  // evaluates and writes metrics, and every stop decision is agreed across ranks.
  Trainer(const config::ExperimentConfig& cfg, Components& parts, torch::Device device, TrainerOptions opts,
          std::shared_ptr<dist::Comm> comm = nullptr);
  TrainResult fit();

 private:
  void log_row(const nlohmann::json& row);

  const config::ExperimentConfig& cfg_;
  Components& parts_;
  torch::Device device_;
  TrainerOptions opts_;
  std::ofstream metrics_;
  std::shared_ptr<dist::Comm> comm_;
};

}  // namespace efftrain

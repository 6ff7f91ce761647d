// `efftrain tune`: measure candidate configurations for a few steady-state steps each and pick
// the one with the best goodput under a memory budget (issue 9, the offline search).
//
// Score of a candidate c against the baseline b (the experiment as written):
//   efficiency(B)  = (B_noise + B0) / (B_noise + B)          (Pollux; B0 = the baseline's batch)
//   goodput(c)     = samples/s(c) x efficiency(global batch of c)
//   score(c)       = goodput(c) / goodput(b) x (1 + w x headroom(c))
//   headroom(c)    = (budget - peak(c)) / budget              (0 without a budget)
// A candidate whose peak memory exceeds the budget is infeasible (score -inf). B_noise comes
// from a short run of the experiment with adaptive accumulation (its gradient-noise estimate).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace efftrain::tune {

struct Candidate {
  std::string name;
  std::vector<std::string> overrides;  // key=value, on top of the experiment
  std::string family;                  // candidates that differ only in micro-batch share one
  int64_t micro_batch = 0;
};

struct Measurement {
  std::string outcome = "ran";  // ran | failed | not_applicable | pruned | not_run
  std::string note;             // why, for anything but ran
  double samples_per_s = 0;
  int64_t peak_bytes = 0;
  int64_t global_batch = 0;     // samples per optimizer step
};

struct Options {
  int64_t budget_bytes = 0;           // 0 = no memory budget
  double headroom_weight = 0;         // w above
  double time_limit_s = 0;            // 0 = none: stop starting candidates after this long
  std::optional<double> b_noise;      // gradient noise scale; none = efficiency 1 for all
};

double statistical_efficiency(double b_noise, double b0, double b);

struct Row {
  Candidate candidate;
  Measurement m;
  double efficiency = 1, goodput = 0, score = -std::numeric_limits<double>::infinity();
  std::string verdict;  // winner, or why it lost
};

struct Result {
  std::vector<Row> rows;  // in the order measured; rows[0] is the baseline
  int winner = 0;
};

// Measures candidates in order (candidates[0] is the baseline and always runs). A candidate
// whose family already had a smaller micro-batch over the budget is pruned without running;
// after `time_limit_s`, the rest are not run. `clock` returns seconds since the search began.
Result search(const std::vector<Candidate>& candidates, const std::function<Measurement(const Candidate&)>& measure,
              const Options& opts, const std::function<double()>& clock);

double score(const Measurement& m, const Measurement& baseline, const Options& opts, double* efficiency = nullptr,
             double* goodput = nullptr);

std::string table_markdown(const Result& r);

// How long the experiment as written would train, from its measurement: max_steps optimizer
// steps of its global batch at its samples/s, capped by max_time_s (0: no cap); none when it did
// not run or has neither limit. The search's cost is stated against it.
std::optional<double> run_estimate_s(const Measurement& as_written, int64_t max_steps, double max_time_s);
nlohmann::json to_json(const Result& r, const Options& opts);

// The overrides every candidate of a task takes on CUDA because they compute the same function
// faster: GPT (task name wikitext2_gpt*): SDPA, the vocabulary padded to 128, the fused loss and
// residual LayerNorms; ResNet (cifar10_resnet*): GPU-resident input, channels_last; both: the
// CUDA-graph micro-step (it falls back to eager where it cannot capture). None off CUDA.
std::vector<std::string> same_function_paths(const std::string& task, bool cuda);

// The CLI: builds the candidate grid for the experiment, measures each with a short run under
// out_dir/<candidate>, and writes out_dir/tuned.yaml, tune.md and tune.json. Returns the exit code.
struct CliOptions {
  std::string experiment;
  std::vector<std::string> overrides;
  std::string out_dir;
  int64_t steps = 30;
  Options search;
};
int run_cli(const CliOptions& opts);

}  // namespace efftrain::tune

#include "efftrain/engine/tune.h"

#include <sys/wait.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "efftrain/config/config.h"
#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/log.h"
#include "efftrain/core/util.h"
#include "efftrain/metrics/report.h"

namespace efftrain::tune {

namespace fs = std::filesystem;

double statistical_efficiency(double b_noise, double b0, double b) {
  if (!(b_noise >= 0) || !std::isfinite(b_noise) || b <= 0) return 1.0;
  return (b_noise + b0) / (b_noise + b);
}

double score(const Measurement& m, const Measurement& baseline, const Options& opts, double* efficiency,
             double* goodput) {
  const double ninf = -std::numeric_limits<double>::infinity();
  if (m.outcome != "ran" || m.samples_per_s <= 0) return ninf;
  const double b0 = static_cast<double>(baseline.global_batch > 0 ? baseline.global_batch : m.global_batch);
  const double eff = opts.b_noise ? statistical_efficiency(*opts.b_noise, b0, static_cast<double>(m.global_batch)) : 1.0;
  const double gp = m.samples_per_s * eff;
  if (efficiency) *efficiency = eff;
  if (goodput) *goodput = gp;
  if (opts.budget_bytes > 0 && m.peak_bytes > opts.budget_bytes) return ninf;
  const double base_gp = baseline.samples_per_s;  // at its own batch B0, efficiency is 1
  if (base_gp <= 0) return ninf;
  double headroom = 0;
  if (opts.budget_bytes > 0)
    headroom = static_cast<double>(opts.budget_bytes - m.peak_bytes) / static_cast<double>(opts.budget_bytes);
  return gp / base_gp * (1.0 + opts.headroom_weight * headroom);
}

Result search(const std::vector<Candidate>& candidates, const std::function<Measurement(const Candidate&)>& measure,
              const Options& opts, const std::function<double()>& clock) {
  Result r;
  std::map<std::string, int64_t> over_budget_at;  // family -> smallest micro-batch that did not fit
  for (size_t i = 0; i < candidates.size(); ++i) {
    const Candidate& c = candidates[i];
    Row row{c, {}, 1, 0, -std::numeric_limits<double>::infinity(), ""};
    auto it = over_budget_at.find(c.family);
    if (i > 0 && opts.time_limit_s > 0 && clock() >= opts.time_limit_s) {
      row.m.outcome = "not_run";
      row.m.note = strf("the search's time limit (%.0f s) was used up", opts.time_limit_s);
    } else if (i > 0 && !c.family.empty() && it != over_budget_at.end() && c.micro_batch >= it->second) {
      row.m.outcome = "pruned";
      row.m.note = strf("micro-batch %lld of the same configuration already exceeded the memory budget",
                        static_cast<long long>(it->second));
    } else {
      row.m = measure(c);
      if (row.m.outcome == "ran" && opts.budget_bytes > 0 && row.m.peak_bytes > opts.budget_bytes && !c.family.empty()) {
        auto& at = over_budget_at[c.family];
        at = at == 0 ? c.micro_batch : std::min(at, c.micro_batch);
      }
    }
    r.rows.push_back(row);
  }
  const Measurement& base = r.rows.front().m;
  for (auto& row : r.rows) row.score = score(row.m, base, opts, &row.efficiency, &row.goodput);
  r.winner = 0;
  for (size_t i = 1; i < r.rows.size(); ++i)
    if (r.rows[i].score > r.rows[static_cast<size_t>(r.winner)].score) r.winner = static_cast<int>(i);
  const Row& w = r.rows[static_cast<size_t>(r.winner)];
  for (size_t i = 0; i < r.rows.size(); ++i) {
    Row& row = r.rows[i];
    if (static_cast<int>(i) == r.winner) {
      row.verdict = std::isfinite(row.score) ? "winner" : "winner by default (nothing else ran within the budget)";
      continue;
    }
    if (row.m.outcome != "ran") {
      row.verdict = row.m.outcome + ": " + row.m.note;
    } else if (opts.budget_bytes > 0 && row.m.peak_bytes > opts.budget_bytes) {
      row.verdict = strf("over the memory budget: peak %.2f GiB > %.2f GiB", gib(row.m.peak_bytes),
                         gib(opts.budget_bytes));
    } else {
      row.verdict = strf("score %.3f < %.3f: goodput %.1f vs %.1f samples/s (throughput %.1f, efficiency %.3f)",
                         row.score, w.score, row.goodput, w.goodput, row.m.samples_per_s, row.efficiency);
    }
  }
  return r;
}

std::string table_markdown(const Result& r) {
  std::ostringstream out;
  out << "| candidate | overrides | samples/s | global batch | efficiency | goodput | peak (GiB) | score | verdict |\n"
      << "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& row : r.rows) {
    const bool ran = row.m.outcome == "ran";
    out << "| " << row.candidate.name << " | " << (row.candidate.overrides.empty() ? "—" : join(row.candidate.overrides, " "))
        << " | " << (ran ? strf("%.1f", row.m.samples_per_s) : "—") << " | "
        << (ran ? std::to_string(row.m.global_batch) : "—") << " | " << (ran ? strf("%.3f", row.efficiency) : "—")
        << " | " << (ran ? strf("%.1f", row.goodput) : "—") << " | "
        << (ran ? strf("%.2f", gib(row.m.peak_bytes)) : "—") << " | "
        << (std::isfinite(row.score) ? strf("%.3f", row.score) : "—") << " | " << row.verdict << " |\n";
  }
  return out.str();
}

nlohmann::json to_json(const Result& r, const Options& opts) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : r.rows)
    rows.push_back({{"name", row.candidate.name},
                    {"overrides", row.candidate.overrides},
                    {"outcome", row.m.outcome},
                    {"note", row.m.note},
                    {"samples_per_s", row.m.samples_per_s},
                    {"peak_bytes", row.m.peak_bytes},
                    {"global_batch", row.m.global_batch},
                    {"efficiency", row.efficiency},
                    {"goodput", row.goodput},
                    {"score", std::isfinite(row.score) ? nlohmann::json(row.score) : nlohmann::json(nullptr)},
                    {"verdict", row.verdict}});
  return {{"winner", r.rows[static_cast<size_t>(r.winner)].candidate.name},
          {"budget_bytes", opts.budget_bytes},
          {"headroom_weight", opts.headroom_weight},
          {"b_noise", opts.b_noise ? nlohmann::json(*opts.b_noise) : nlohmann::json(nullptr)},
          {"score", "goodput / baseline goodput x (1 + headroom_weight x headroom); goodput = samples/s x "
                    "(B_noise + B0) / (B_noise + B); over the budget = infeasible"},
          {"candidates", rows}};
}

namespace {

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw std::runtime_error("tune: cannot find this program (/proc/self/exe)");
  return std::string(buf, static_cast<size_t>(n));
}

// One short run in its own process (fresh memory figures), its report read back.
Measurement run_candidate(const CliOptions& o, const std::vector<std::string>& extra, const std::string& dir,
                          nlohmann::json* report_out = nullptr) {
  std::vector<std::string> sets = o.overrides;
  const int64_t warm = std::max<int64_t>(1, std::min<int64_t>(5, o.steps / 3));
  for (const auto& s : {"train.max_steps=" + std::to_string(o.steps), std::string("train.max_time_s=0"),
                        std::string("train.eval_every=0"), std::string("train.eval_every_samples=0"),
                        std::string("task.data.eval_limit=64"),
                        "train.timing_warmup_steps=" + std::to_string(warm), std::string("train.stop_at_target=false"),
                        std::string("train.require_target=false"), std::string("output.save_model=false"),
                        std::string("output.save_checkpoint=false"), std::string("output.checkpoint_every_steps=0"),
                        std::string("output.checkpoint_every_min=0"), std::string("distributed.world_size=1")})
    sets.push_back(s);
  for (const auto& s : extra) sets.push_back(s);
  std::string cmd = shell_quote(self_exe()) + " run " + shell_quote(o.experiment) + " --overwrite --out " + shell_quote(dir);
  for (const auto& s : sets) cmd += " --set " + shell_quote(s);
  files::make_dirs(dir);
  const std::string log_path = (fs::path(dir) / "tune.log").string();
  cmd += " > " + shell_quote(log_path) + " 2>&1";
  const int status = std::system(cmd.c_str());
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  Measurement m;
  const std::string report_path = (fs::path(dir) / "report.json").string();
  if (code != 0 || !files::exists(report_path)) {
    std::string last;
    std::istringstream in(files::exists(log_path) ? read_file(log_path) : "");
    for (std::string line; std::getline(in, line);)
      if (line.find("error") != std::string::npos) last = line;
    m.outcome = code == exit_code::kUser ? "not_applicable" : "failed";
    m.note = last.empty() ? "exit code " + std::to_string(code) : last;
    return m;
  }
  const nlohmann::json j = report::read(report_path);
  m.samples_per_s = j["throughput"]["samples_per_s"].get<double>();
  m.peak_bytes = j["memory"]["peak_allocated_bytes"].get<int64_t>();
  const int64_t steps = j["result"]["steps"].get<int64_t>();
  m.global_batch = steps > 0 ? j["result"]["samples"].get<int64_t>() / steps : 0;
  if (report_out) *report_out = j;
  return m;
}

}  // namespace

std::optional<double> run_estimate_s(const Measurement& m, int64_t max_steps, double max_time_s) {
  std::optional<double> s;
  if (m.outcome == "ran" && m.samples_per_s > 0 && max_steps > 0)
    s = static_cast<double>(max_steps) * static_cast<double>(m.global_batch) / m.samples_per_s;
  if (max_time_s > 0) s = s ? std::min(*s, max_time_s) : max_time_s;
  return s;
}

namespace {
// Candidates run as subprocesses, so tune cannot ask the task: the registered names tell.
bool gpt_task(const std::string& task) { return task.rfind("wikitext2_gpt", 0) == 0; }
}  // namespace

std::vector<std::string> same_function_paths(const std::string& task, bool cuda) {
  if (!cuda) return {};
  if (gpt_task(task))
    return {"task.model.attention=sdpa", "task.model.vocab_multiple=128", "task.model.fused_loss=true",
            "task.model.fused_norm=true", "task.model.fused_gelu=true", "train.cuda_graph=true"};
  if (task.rfind("cifar10_resnet", 0) == 0)
    return {"task.data.input_path=device", "task.model.channels_last=true", "task.model.fused_bn_relu=true",
            "task.model.bn_kernels=efftrain", "task.model.conv_grads_in_place=true", "train.cuda_graph=true"};
  return {};
}

int run_cli(const CliOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  auto clock = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  const config::ExperimentConfig cfg = config::load(o.experiment, o.overrides);  // bad input: exit 2 here
  if (cfg.distributed.world_size > 1)
    log::warn("tune measures one process; distributed.world_size " + std::to_string(cfg.distributed.world_size) +
              " is set to 1 for the candidates");
  const std::string out = o.out_dir.empty() ? (fs::path("runs") / (cfg.name + "-tune")).string() : o.out_dir;
  files::make_dirs(out);
  Options opts = o.search;

  // The gradient noise scale: a short run with adaptive accumulation (its estimate).
  {
    nlohmann::json j;
    const auto m = run_candidate(o, {"accumulation.mode=adaptive", "accumulation.k=2", "accumulation.interval=5",
                                     "precision.mode=" + cfg.precision.mode},
                                 (fs::path(out) / "noise-probe").string(), &j);
    if (m.outcome == "ran") {
      for (const auto& h : j["optimizations"]["accumulation"].value("noise_history", nlohmann::json::array()))
        if (h["b_noise"].is_number()) opts.b_noise = h["b_noise"].get<double>();
    }
    log::info(opts.b_noise ? strf("tune: gradient noise scale B_noise = %.1f samples", *opts.b_noise)
                           : "tune: no gradient noise estimate (efficiency 1 for every batch)");
  }

  std::vector<Candidate> cands = {{"as-written", {}, "", cfg.train.batch_size}};
  // A candidate that resolves to the experiment as written is not measured twice.
  auto same_as_written = [&](const std::vector<std::string>& sets) {
    std::vector<std::string> all = o.overrides;
    all.insert(all.end(), sets.begin(), sets.end());
    return config::config_hash(config::load(o.experiment, all)) == config::config_hash(cfg);
  };
  // Lower precision first: on a GPU those are the likeliest winners, and --time stops starting
  // candidates in this order.
  const bool cuda = cfg.device == "cuda" || (cfg.device == "auto" && torch::cuda::is_available());
  std::vector<std::string> precisions = {"bf16"};
  if (cuda) precisions.push_back("fp16");
  precisions.push_back("fp32");
  // GPT: selective recompute is a third placement.
  std::vector<std::string> placements = {"none", "sqrt"};
  if (gpt_task(cfg.task.name)) placements.push_back("selective");
  const std::vector<std::string> same_function = same_function_paths(cfg.task.name, cuda);
  for (const auto& p : precisions)
    for (const auto& ck : placements)
      for (const int64_t mult : {1, 2}) {
        const int64_t b = cfg.train.batch_size * mult;
        Candidate c{p + "-" + ck + "-b" + std::to_string(b),
                    {"precision.mode=" + p, "checkpointing.policy=" + ck, "accumulation.mode=none",
                     "train.batch_size=" + std::to_string(b)},
                    p + "-" + ck,
                    b};
        c.overrides.insert(c.overrides.end(), same_function.begin(), same_function.end());
        if (!same_as_written(c.overrides)) cands.push_back(c);
      }
  const Result r = search(
      cands,
      [&](const Candidate& c) {
        log::info("tune: measuring " + c.name);
        return run_candidate(o, c.overrides, (fs::path(out) / c.name).string());
      },
      opts, clock);

  const Row& w = r.rows[static_cast<size_t>(r.winner)];
  std::vector<std::string> winner_sets = o.overrides;
  for (const auto& s : w.candidate.overrides) winner_sets.push_back(s);
  config::ExperimentConfig tuned = config::load(o.experiment, winner_sets);
  tuned.name = cfg.name + "-tuned";
  tuned.description = "efftrain tune of " + o.experiment + ": " + w.candidate.name + " (" + w.verdict + ")";
  write_file_atomic((fs::path(out) / "tuned.yaml").string(), config::to_yaml(tuned));
  const double spent = clock();
  const auto run_s = run_estimate_s(r.rows[0].m, cfg.train.max_steps, cfg.train.max_time_s);
  std::string md = "# efftrain tune: " + o.experiment + "\n\n" + table_markdown(r) +
                   strf("\nSearch time %.1f s for %zu candidates; winner: %s.\n", spent, r.rows.size(),
                        w.candidate.name.c_str());
  if (run_s)
    md += strf("The search cost %.1f%% of the experiment as written (about %.0f s of training at its measured "
               "throughput).\n",
               100.0 * spent / *run_s, *run_s);
  write_file_atomic((fs::path(out) / "tune.md").string(), md);
  auto j = to_json(r, opts);
  j["search_s"] = spent;
  j["run_estimate_s"] = run_s ? nlohmann::json(*run_s) : nlohmann::json(nullptr);
  j["search_fraction_of_run"] = run_s ? nlohmann::json(spent / *run_s) : nlohmann::json(nullptr);
  j["steps_per_candidate"] = o.steps;
  write_file_atomic((fs::path(out) / "tune.json").string(), j.dump(2) + "\n");
  std::printf("%s", md.c_str());
  std::printf("%s\n", (fs::path(out) / "tuned.yaml").string().c_str());
  return exit_code::kOk;
}

}  // namespace efftrain::tune

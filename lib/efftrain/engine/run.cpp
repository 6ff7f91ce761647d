#include "efftrain/engine/run.h"

#include <ATen/Context.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <filesystem>
#include <sstream>

#include "efftrain/config/config.h"
#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/log.h"
#include "efftrain/core/util.h"
#include "efftrain/dist/comm.h"
#include "efftrain/dist/launcher.h"
#include "efftrain/engine/checkpoint.h"
#include "efftrain/engine/step_graph.h"
#include "efftrain/engine/context.h"
#include "efftrain/engine/policy.h"
#include "efftrain/engine/trainer.h"
#include "efftrain/metrics/device.h"
#include "efftrain/metrics/profiler.h"
#include "efftrain/metrics/report.h"

namespace efftrain {

namespace fs = std::filesystem;

namespace {

// The run folder a checkpoint folder belongs to (<run>/checkpoints/step-<N>), or empty.
std::string run_folder_of(const std::string& checkpoint) {
  const fs::path p(files::absolute(checkpoint));
  return p.parent_path().filename() == "checkpoints" ? p.parent_path().parent_path().string() : "";
}

std::string choose_out_dir(const config::ExperimentConfig& cfg, const RunOptions& opts,
                           int64_t started) {
  if (!opts.out_dir.empty()) return opts.out_dir;
  if (const char* d = std::getenv("EFFTRAIN_OUT_DIR"); d && *d) return d;  // set by the launcher
  if (!cfg.output.dir.empty()) return cfg.output.dir;
  if (opts.resume == "auto") throw UserError("--resume auto: name the run's folder with --out (or output.dir)");
  if (!opts.resume.empty()) {  // continue in the run folder the checkpoint came from
    if (files::is_dir((fs::path(opts.resume) / "checkpoints").string())) return opts.resume;
    if (auto run = run_folder_of(opts.resume); !run.empty()) return run;
  }
  return (fs::path("runs") / (cfg.name + "-" + utc_timestamp_compact(started))).string();
}

// Whether a resume continues the run that lives in `out_dir` (which may then be non-empty):
// --resume auto, or a checkpoint (or run folder) of that very run. Anything else needs --overwrite.
bool continues_in(const std::string& out_dir, const RunOptions& opts) {
  if (opts.resume.empty()) return false;
  if (opts.resume == "auto") return true;
  const std::string out = files::absolute(out_dir), spec = files::absolute(opts.resume);
  return spec == out || run_folder_of(opts.resume) == out;
}

// The worker argv of a restart: the same command with --resume auto.
std::vector<std::string> with_resume_auto(std::vector<std::string> argv) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == "--resume") {
      ++i;
      continue;
    }
    if (argv[i].rfind("--resume=", 0) == 0) continue;
    out.push_back(argv[i]);
  }
  out.push_back("--resume");
  out.push_back("auto");
  return out;
}

// metrics.jsonl of a resumed run: the rows up to the (verified) checkpoint's step, from the
// run the checkpoint belongs to (its finished file, or the partial one a crash left).
std::string carried_metrics(const std::string& checkpoint) {
  const std::string run = run_folder_of(checkpoint);
  if (run.empty()) return "";
  const int64_t step = nlohmann::json::parse(read_file((fs::path(checkpoint) / "manifest.json").string()))
                           .at("step")
                           .get<int64_t>();
  std::string src = (fs::path(run) / "metrics.jsonl.partial").string();
  if (!files::exists(src)) src = (fs::path(run) / "metrics.jsonl").string();
  if (!files::exists(src)) return "";
  std::string kept, line;
  std::istringstream in(read_file(src, "metrics stream"));
  while (std::getline(in, line)) {
    const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_object() && row.contains("step") && row["step"].is_number_integer() && row["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  return kept;
}

void check_out_dir(const std::string& dir, bool overwrite) {
  if (!files::exists(dir)) return;
  if (!files::is_dir(dir))
    throw UserError(dir + ": output folder is a file, not a folder");
  if (!files::is_empty_dir(dir) && !overwrite)
    throw UserError(dir + ": output folder already exists and is not empty (pass --overwrite to replace its files)");
}

Components build_components(const BuildContext& ctx) {
  const auto& c = ctx.cfg;
  Components parts;
  parts.task = TaskRegistry::create(c.task.name, ctx);
  parts.precision = PrecisionRegistry::create(c.precision.mode, ctx);
  parts.accumulation = AccumulationRegistry::create(c.accumulation.mode, ctx);
  parts.schedule = ScheduleRegistry::create(c.schedule.name, ctx);
  parts.optimizer = OptimizerRegistry::create(c.optim.name, ctx);
  parts.grad_sync = GradSyncRegistry::create(running_grad_sync(c, ctx.world_size), ctx);
  parts.checkpointing = CheckpointingRegistry::create(c.checkpointing.policy, ctx);
  return parts;
}

nlohmann::json opt_number(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

// The report's "experiment" object: what ran, as given and as resolved.
nlohmann::json experiment_section(const config::ExperimentConfig& cfg, const RunOptions& opts) {
  return {{"name", cfg.name},
          {"description", cfg.description},
          {"file", opts.experiment},
          {"overrides", opts.overrides},
          {"config", config::to_json(cfg)},
          {"config_hash", config::config_hash(cfg)}};
}

// After a failed multi-process job: rank 0's report says which worker failed first; when rank 0
// could not write one, the launcher writes a short one (not after a bad-input exit).
void record_failure(const std::string& report_path, const dist::LaunchResult& res,
                    const config::ExperimentConfig& cfg, const RunOptions& opts) {
  nlohmann::json failure = {{"rank", res.failed_rank >= 0 ? nlohmann::json(res.failed_rank) : nlohmann::json(nullptr)},
                            {"exit_code", res.exit_code},
                            {"signal", res.failed_signal ? nlohmann::json(strsignal(res.failed_signal))
                                                         : nlohmann::json(nullptr)},
                            {"interrupted", res.interrupted}};
  const std::string what = res.failed_rank >= 0
                               ? "rank " + std::to_string(res.failed_rank) + " failed with exit code " +
                                     std::to_string(res.exit_code)
                               : "interrupted (exit code " + std::to_string(res.exit_code) + ")";
  nlohmann::json j;
  if (files::exists(report_path)) {
    j = report::read(report_path);
    const std::string status = j.value("status", "");
    if (status == "completed" || status == "target_reached") j["status"] = "failed";
    if (j["message"].is_null()) j["message"] = what;
  } else {
    if (res.exit_code == exit_code::kUser) return;
    files::make_dirs(fs::path(report_path).parent_path().string());
    j = {{"schema", report::kSchema},
         {"status", "failed"},
         {"message", what + " before rank 0 wrote its report"},
         {"experiment", experiment_section(cfg, opts)},
         {"environment",
          {{"efftrain_version", report::efftrain_version()},
           {"git_commit", report::git_commit()},
           {"world_size", cfg.distributed.world_size},
           {"hostname", hostname()},
           {"finished_at", utc_timestamp_iso(unix_time_now())}}}};
  }
  j["failure"] = failure;
  report::write(report_path, j);
}

// The checkpoint a spec names (see RunOptions::resume and train.init_from); UserError when an
// explicit spec holds none. "auto" looks in the output folder and may find none.
std::string resolve_checkpoint(const std::string& spec, const std::string& out_dir, const config::ExperimentConfig& cfg,
                               int world, CheckpointUse use, bool checksums = true) {
  if (spec == "auto") return files::is_dir(out_dir) ? find_checkpoint(out_dir, cfg, world, use, nullptr, checksums) : "";
  std::string why;
  const std::string dir = find_checkpoint(spec, cfg, world, use, &why, checksums);
  if (dir.empty()) throw UserError(spec + ": holds no valid checkpoint" + (why.empty() ? "" : " (newest: " + why + ")"));
  return dir;
}

// This process starts the workers and waits for them (efftrain's own torchrun); after a
// failure it restarts them all from the newest checkpoint, up to opts.max_restarts times.
RunOutcome launch_workers(const RunOptions& opts, const config::ExperimentConfig& cfg, int64_t started) {
  const std::string out_dir = choose_out_dir(cfg, opts, started);
  check_out_dir(out_dir, opts.overwrite || continues_in(out_dir, opts));
  const int world = static_cast<int>(cfg.distributed.world_size);
  // An early exit 2 for the wrong checkpoint; rank 0 then hashes the files (once).
  if (!cfg.train.init_from.empty())
    resolve_checkpoint(cfg.train.init_from, out_dir, cfg, world, CheckpointUse::kInitFrom, /*checksums=*/false);
  if (!opts.resume.empty()) resolve_checkpoint(opts.resume, out_dir, cfg, world, CheckpointUse::kResume, false);
  if (opts.worker_argv.empty()) throw std::logic_error("run_experiment: no worker command line to launch");
  ::setenv("EFFTRAIN_OUT_DIR", out_dir.c_str(), 1);  // every worker agrees on the folder
  dist::LaunchOptions lo;
  lo.max_restarts = opts.max_restarts;
  lo.bind_cpus = cfg.distributed.bind_cpus;
  lo.nproc = world;
  lo.grace_s = cfg.distributed.stop_grace_s;
  dist::LaunchResult res;
  nlohmann::json attempts = nlohmann::json::array();
  double failed_wall_s = 0;
  for (int attempt = 0;; ++attempt) {
    lo.restart_count = attempt;
    lo.argv = attempt == 0 ? opts.worker_argv : with_resume_auto(opts.worker_argv);
    const auto a0 = std::chrono::steady_clock::now();
    res = dist::launch(lo);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - a0).count();
    // Bad input and a diverged run fail the same way again; an interrupt is the user's wish.
    const bool retry = res.exit_code != 0 && !res.interrupted && res.exit_code != exit_code::kUser &&
                       res.exit_code != exit_code::kTrainingFailed && attempt < opts.max_restarts;
    if (!retry) break;
    attempts.push_back({{"attempt", attempt}, {"failed_rank", res.failed_rank}, {"exit_code", res.exit_code},
                        {"signal", res.failed_signal ? nlohmann::json(strsignal(res.failed_signal)) : nlohmann::json(nullptr)},
                        {"wall_s", wall}});
    failed_wall_s += wall;
    log::warn(strf("rank %d failed with exit code %d; restarting every worker from the newest checkpoint "
                   "(restart %d of %d)", res.failed_rank, res.exit_code, attempt + 1, opts.max_restarts));
  }
  const std::string report_path = (fs::path(out_dir) / "report.json").string();
  if (res.exit_code != 0) record_failure(report_path, res, cfg, opts);
  if (opts.max_restarts > 0 && files::exists(report_path)) {
    nlohmann::json j = report::read(report_path);
    const auto& resumed = j["result"]["resumed_from"];
    const double kept = resumed.is_object() && !attempts.empty() ? resumed.value("loop_s", 0.0) : 0.0;
    j["restarts"] = {{"max", opts.max_restarts},
                     {"count", attempts.size()},
                     {"attempts", attempts},
                     {"lost_s", std::max(0.0, failed_wall_s - kept)},
                     {"lost_s_means", "wall time of the failed attempts minus the training-loop time their "
                                      "checkpoints kept"}};
    report::write(report_path, j);
  }
  RunOutcome out;
  out.exit_code = res.exit_code;
  if (files::exists(report_path)) {
    out.report_path = report_path;
    out.status = report::read(report_path).value("status", "");
  }
  return out;
}

}  // namespace

RunOutcome run_experiment(const RunOptions& opts) {
  const auto wall0 = std::chrono::steady_clock::now();
  const int64_t started = unix_time_now();
  config::ExperimentConfig cfg = config::load(opts.experiment, opts.overrides);
  const auto env = dist::worker_env();
  if (!env && (cfg.distributed.world_size > 1 || opts.max_restarts > 0)) return launch_workers(opts, cfg, started);
  if (env && env->world_size != cfg.distributed.world_size) {
    if (env->rank == 0 && cfg.distributed.world_size != 1)
      log::warn(strf("distributed.world_size is %lld but WORLD_SIZE is %d: the environment decides",
                     static_cast<long long>(cfg.distributed.world_size), env->world_size));
    cfg.distributed.world_size = env->world_size;
  }
  const int rank = env ? env->rank : 0;
  const int world = env ? env->world_size : 1;
  // Before anything slow (CUDA, data): the other ranks meet a store that answers.
  const auto served = world > 1 ? dist::serve_store(*env, cfg.distributed.timeout_s) : nullptr;
  const bool writer = rank == 0;  // only rank 0 writes files
  if (!writer) log::set_quiet(true);

  std::string out_dir = choose_out_dir(cfg, opts, started);
  if (writer) check_out_dir(out_dir, opts.overwrite || continues_in(out_dir, opts));

  const torch::Device device = metrics::resolve_device(cfg.device, env ? env->local_rank : 0);
  if (device.is_cuda()) {
    auto& ctx = at::globalContext();
    ctx.setAllowTF32CuBLAS(cfg.precision.tf32);
    ctx.setAllowTF32CuDNN(cfg.precision.tf32);
    ctx.setBenchmarkCuDNN(!cfg.train.deterministic);
    ctx.setDeterministicCuDNN(cfg.train.deterministic);
  }
  const auto own_stream = cfg.train.cuda_graph ? StepGraph::run_on_own_stream(device) : nullptr;
  if (!device.is_cuda()) metrics::track_cpu_memory();
  std::shared_ptr<dist::Comm> comm;
  if (world > 1) {
    dist::maybe_fault(rank, "rendezvous");
    comm = dist::Comm::connect(*env, device, cfg.distributed.backend, cfg.distributed.timeout_s, served);
    // Rank 0's folder for everyone (under torchrun each rank would pick its own timestamp).
    if (writer) comm->publish("out_dir", out_dir);
    else out_dir = comm->fetch("out_dir");
  }
  // Checkpoints to start from: rank 0 finds and verifies them (sizes and SHA-256), the others
  // take its answer.
  // A refusal is every rank's: rank 0 publishes it and all exit 2 with its message after a
  // barrier (rank 0 hosts the store; leaving earlier would fail the others' reads, exit 1).
  auto agreed_checkpoint = [&](const std::string& spec, CheckpointUse use, const std::string& key) {
    static const std::string kRefused = "refused:";
    std::string dir;
    if (spec.empty()) return dir;
    if (writer) {
      try {
        dir = resolve_checkpoint(spec, out_dir, cfg, world, use);
      } catch (const UserError& e) {
        if (!comm) throw;
        dir = kRefused + e.what();
      }
    }
    if (comm) {
      if (writer) comm->publish(key, dir);
      else dir = comm->fetch(key);
    }
    if (dir.rfind(kRefused, 0) == 0) {
      comm->barrier();
      throw UserError(dir.substr(kRefused.size()));
    }
    return dir;
  };
  cfg.train.init_from = agreed_checkpoint(cfg.train.init_from, CheckpointUse::kInitFrom, "init_from");
  const std::string resume_dir = agreed_checkpoint(opts.resume, CheckpointUse::kResume, "resume");
  if (!opts.resume.empty() && resume_dir.empty())
    log::info("--resume " + opts.resume + ": no checkpoint in " + out_dir + " yet; starting from the beginning");
  torch::manual_seed(cfg.train.seed);
  if (cfg.train.memory_snapshot_steps > 0) metrics::start_memory_history(device);  // the model's allocations too
  BuildContext bctx{cfg, device, rank, world, comm};
  Components parts = build_components(bctx);
  if (cfg.checkpointing.policy != "none" && parts.task->num_blocks() == 0)
    throw UserError("checkpointing.policy: " + cfg.checkpointing.policy + " needs a model with blocks; task " +
                    cfg.task.name + " has none (use none)");
  auto probe = [&] { return parts.task->probe_block_memory([&] { return parts.precision->forward_scope(); }); };
  std::vector<BlockMemory> measured;
  if (parts.checkpointing->needs_measurement()) measured = probe();
  const auto segments = parts.checkpointing->needs_measurement() ? parts.checkpointing->segments_for(measured)
                                                                 : parts.checkpointing->segments(parts.task->num_blocks());
  // The memory the placement saves, estimated from a probe forward (the device's allocator; on
  // the CPU the tensor bytes that metrics::track_cpu_memory counts).
  nlohmann::json memory_saved = {{"estimate", nullptr}, {"why", "no segments are recomputed"}};
  if (parts.checkpointing->selective())
    memory_saved["why"] = "selective recompute inside the blocks and a chunked head: not estimated from the block probe; "
                          "compare memory.peak_allocated_bytes with a run without it";
  if (!segments.empty()) {
    if (measured.empty()) measured = probe();
    int64_t without = 0;
    for (const auto& b : measured) without += b.activation_bytes;
    const int64_t with = estimate_activation_peak(measured, segments);
    memory_saved = {{"estimate", without - with},
                    {"block_activation_bytes_without", without},
                    {"block_activation_bytes_with", with},
                    {"fraction", without > 0 ? static_cast<double>(without - with) / static_cast<double>(without) : 0.0},
                    {"why", "probe forward at the training batch: bytes each block holds for backward, without "
                            "recomputation and at the peak with it (the stem and head are not blocks)"}};
  }
  parts.task->set_checkpoint_segments(segments);
  if (parts.checkpointing->selective() && !parts.task->set_selective_recompute(true))
    throw UserError("checkpointing.policy: selective recomputes a GPT's GELU outputs and chunks its logits; task " + cfg.task.name +
                    " has no selective recompute (use sqrt, every or budget)");
  if (!measured.empty()) metrics::reset_peak_memory(device);  // the report's peak is training's, not the probe's
  const double recompute_flops = recompute_forward_flops(parts.task->block_forward_flops_per_sample(), segments);

  // Input is valid and the data loaded: from here on, files are written.
  const std::string metrics_partial = (fs::path(out_dir) / "metrics.jsonl.partial").string();
  const std::string metrics_final = (fs::path(out_dir) / "metrics.jsonl").string();
  const std::string report_path = (fs::path(out_dir) / "report.json").string();
  if (writer) {
    files::make_dirs(out_dir);
    write_file_atomic((fs::path(out_dir) / "config.yaml").string(), config::to_yaml(cfg));
    write_file_atomic(metrics_partial, resume_dir.empty() ? "" : carried_metrics(resume_dir));
  }

  const auto info = metrics::describe(device);
  const int64_t params = count_parameters(parts.task->model());
  const double train_flops = parts.task->train_flops_per_sample();
  log::info(strf("experiment %s | task %s (%lld parameters) | device %s | precision %s | output %s",
                 cfg.name.c_str(), cfg.task.name.c_str(), static_cast<long long>(params), info.name.c_str(),
                 cfg.precision.mode.c_str(), out_dir.c_str()));

  metrics::reset_peak_memory(device);
  const double setup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();

  TrainResult result;
  std::string failure;
  int exit_code = exit_code::kOk;
  {
    TrainerOptions to;
    to.metrics_path = writer ? metrics_partial : "";
    const auto& oc = cfg.output;
    if (oc.save_checkpoint || oc.checkpoint_every_steps > 0 || oc.checkpoint_every_min > 0)
      to.checkpoints_root = (fs::path(out_dir) / "checkpoints").string();
    to.resume_from = resume_dir;
    if (cfg.train.profile_start_step > 0)
      to.profile_path = (fs::path(out_dir) / "profile" / ("trace.rank" + std::to_string(rank) + ".json")).string();
    if (cfg.train.memory_snapshot_steps > 0)
      to.memory_snapshot_path = (fs::path(out_dir) / ("memory_snapshot.rank" + std::to_string(rank) + ".pickle")).string();
    to.block_memory = measured;
    to.segments = segments;
    Trainer trainer(cfg, parts, device, to, comm);
    try {
      result = trainer.fit();
    } catch (const TrainingFailed& e) {
      result.status = e.status();
      result.message = e.what();
    } catch (const std::exception& e) {
      result.status = "failed";
      result.message = e.what();
      if (world > 1)  // most often a collective that lost its peer or ran past its timeout
        result.message = strf("rank %d of %d (distributed.timeout_s %g): ", rank, world, cfg.distributed.timeout_s) +
                         result.message;
      failure = result.message;
    }
  }
  if (writer) files::rename(metrics_partial, metrics_final);
  if (writer && cfg.output.save_model && result.status != "failed")
    save_model(parts.task->model(), (fs::path(out_dir) / "model.pt").string());
  if (result.status == "diverged") exit_code = exit_code::kTrainingFailed;
  if (result.status == "failed") exit_code = exit_code::kInternal;
  if (cfg.train.require_target && !result.time_to_target_s && exit_code == exit_code::kOk) {
    result.status = "failed";
    result.message = "target " + std::to_string(*cfg.train.target) + " was required and not reached";
    exit_code = exit_code::kTrainingFailed;
  }

  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  const auto mem = metrics::peak_memory(device);
  const double sps = result.steady_s > 0 ? result.steady_samples / result.steady_s : 0;
  const double tps = result.steady_s > 0 ? result.steady_tokens / result.steady_s : 0;
  const auto peak = metrics::peak_flops(info.name, device.is_cuda(), parts.precision->compute_dtype(),
                                        cfg.precision.tf32, cfg.output.peak_tflops);
  const double achieved = train_flops * sps;
  const auto metric = parts.task->metric();

  const auto elsewhere = metrics::contexts_elsewhere(device);
  if (!elsewhere.empty())
    log::warn(strf("rank %d holds a CUDA context on %zu GPU(s) besides its own (%s): memory there, and that GPU's "
                   "owner shares it with this process",
                   rank, elsewhere.size(), nlohmann::json(elsewhere).dump().c_str()));
  // Per-rank figures: each rank publishes its own through the store; rank 0 collects them
  // (not after a failure: a dead rank would never publish).
  nlohmann::json mine = {{"rank", rank},
                         {"device_name", info.name},
                         {"samples_per_s", sps / world},
                         {"peak_allocated_bytes", mem.allocated},
                         {"peak_reserved_bytes", mem.reserved},
                         {"optimizer_state_bytes", parts.optimizer->state_bytes()},
                         {"cuda_contexts_elsewhere", elsewhere}};
  nlohmann::json ranks = nlohmann::json::array({mine});
  int64_t peak_allocated = mem.allocated, peak_reserved = mem.reserved;
  if (comm && result.status != "failed") {
    comm->publish("rank/" + std::to_string(rank), mine.dump());
    if (writer) {
      for (int r = 1; r < world; ++r) {
        auto j = nlohmann::json::parse(comm->fetch("rank/" + std::to_string(r)));
        peak_allocated = std::max(peak_allocated, j.value("peak_allocated_bytes", int64_t{0}));
        peak_reserved = std::max(peak_reserved, j.value("peak_reserved_bytes", int64_t{0}));
        ranks.push_back(j);
      }
    }
    comm->barrier();  // nobody shuts the group down while rank 0 still reads
  }
  if (!writer) return {"", result.status, exit_code};

  nlohmann::json model = parts.task->describe();
  model["name"] = parts.task->model_name();
  model["parameters"] = params;
  model["flops_per_sample"] = train_flops;
  model["forward_flops_per_sample"] = train_flops / 3.0;

  nlohmann::json report = {
      {"schema", report::kSchema},
      {"status", result.status},
      {"message", result.message.empty() ? nlohmann::json(nullptr) : nlohmann::json(result.message)},
      {"experiment", experiment_section(cfg, opts)},
      {"environment",
       {{"efftrain_version", report::efftrain_version()},
        {"git_commit", report::git_commit()},
        {"torch_version", TORCH_VERSION},
        {"cuda_version", info.cuda_version.empty() ? nlohmann::json(nullptr) : nlohmann::json(info.cuda_version)},
        {"cudnn_version", info.cudnn_version.empty() ? nlohmann::json(nullptr) : nlohmann::json(info.cudnn_version)},
        {"device", device.str()},
        {"device_name", info.name},
        {"world_size", world},
        {"backend", comm ? nlohmann::json(comm->backend_name()) : nlohmann::json(nullptr)},
        {"hostname", hostname()},
        {"started_at", utc_timestamp_iso(started)},
        {"finished_at", utc_timestamp_iso(unix_time_now())}}},
      {"model", model},
      {"result",
       {{"steps", result.steps},
        {"samples", result.samples},
        {"tokens", result.tokens},
        {"wall_s", wall_s},
        {"setup_s", setup_s},
        {"train_s", result.train_s},
        {"eval_s", result.eval_s},
        {"checkpoint_s", result.checkpoint_s},
        {"time_to_target_s", opt_number(result.time_to_target_s)},
        {"checkpoints",
         {{"written", result.checkpoints_written},
          {"last", result.last_checkpoint.empty() ? nlohmann::json(nullptr) : nlohmann::json(result.last_checkpoint)}}},
        {"resumed_from", result.resumed_step ? nlohmann::json{{"checkpoint", resume_dir},
                                                              {"step", *result.resumed_step},
                                                              {"loop_s", result.resumed_loop_s}}
                                             : nlohmann::json(nullptr)}}},
      {"throughput",
       {{"samples_per_s", sps},
        {"tokens_per_s", tps},
        {"steady_steps", result.steady_steps},
        {"steady_s", result.steady_s},
        {"warmup_steps_excluded", result.steps - result.steady_steps},
        {"window_restarts", result.window_restarts},
        {"timing", device.is_cuda() ? "host clock with device synchronization at window edges"
                                    : "host clock"}}},
      {"memory",
       {{"peak_allocated_bytes", peak_allocated},
        {"peak_reserved_bytes", peak_reserved},
        {"per", world > 1 ? "maximum over ranks" : "process"},
        {"source", mem.source},
        {"snapshot", result.memory_snapshot}}},
      {"mfu", peak.flops_per_s > 0 ? nlohmann::json(achieved / (peak.flops_per_s * world)) : nlohmann::json(nullptr)},
      {"mfu_detail",
       {{"achieved_flops_per_s", achieved},
        {"peak_flops_per_s", peak.flops_per_s * world},
        {"devices", world},
        {"peak_source", peak.source},
        {"compute_dtype", parts.precision->compute_dtype()}}},
      {"quality",
       {{"metric", metric.name},
        {"higher_is_better", metric.higher_is_better},
        {"final", opt_number(result.final_metric)},
        {"best", opt_number(result.best_metric)},
        {"target", opt_number(cfg.train.target)},
        {"final_train_loss", result.final_train_loss},
        {"curve", result.curve}}},
      {"optimizations",
       {{"precision", parts.precision->report()},
        {"accumulation", parts.accumulation->report()},
        {"schedule", parts.schedule->report()},
        {"optimizer", parts.optimizer->report()},
        {"grad_sync", parts.grad_sync->report()},
        {"cuda_graph", result.cuda_graph},
        {"policy", result.policy},
        {"checkpointing", [&] {
           auto j = parts.checkpointing->report();
           j["recompute_forward_flops_per_sample"] = recompute_flops;
           j["recompute_overhead_fraction"] = train_flops > 0 ? recompute_flops / train_flops : 0.0;
           j["memory_saved"] = memory_saved;
           return j;
         }()}}},
      {"ranks", ranks},
      {"profile", result.profile},
  };
  report::write(report_path, report);
  if (!failure.empty()) log::error("run failed: " + failure);
  else if (exit_code != exit_code::kOk) log::error("run " + result.status + ": " + result.message);
  return {report_path, result.status, exit_code};
}

}  // namespace efftrain

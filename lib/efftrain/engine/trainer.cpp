#include "efftrain/engine/trainer.h"


#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <optional>

#include "efftrain/core/error.h"
#include "efftrain/core/log.h"
#include "efftrain/core/util.h"
#include "efftrain/dist/comm.h"
#include "efftrain/dist/launcher.h"
#include "efftrain/engine/checkpoint.h"
#include "efftrain/engine/policy.h"
#include "efftrain/engine/step_graph.h"
#include "efftrain/metrics/device.h"
#include "efftrain/metrics/profiler.h"
#include "efftrain/optim/grads.h"

namespace efftrain {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}
std::string human_bytes(int64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", gib(b));
  return buf;
}
// One variable of fit() that a checkpoint carries, bound to its key: the list of them is what
// write_checkpoint writes and a resume reads back, so the two cannot drift apart.
struct StateField {
  const char* key;
  std::function<nlohmann::json()> get;
  std::function<void(const nlohmann::json&)> set;
};
template <class T>
StateField bind(const char* key, T& v) {
  return {key, [&v] { return nlohmann::json(v); }, [&v](const nlohmann::json& j) { v = j.get<T>(); }};
}
template <class T>
StateField bind(const char* key, std::optional<T>& v) {
  return {key, [&v] { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); },
          [&v](const nlohmann::json& j) {
            if (j.is_null()) v.reset();
            else v = j.get<T>();
          }};
}
std::string human_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  if (s < 120) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 7200) std::snprintf(buf, sizeof buf, "%.1fmin", s / 60);
  else std::snprintf(buf, sizeof buf, "%.1fh", s / 3600);
  return buf;
}
}  // namespace

Trainer::Trainer(const config::ExperimentConfig& cfg, Components& parts, torch::Device device, TrainerOptions opts,
                 std::shared_ptr<dist::Comm> comm)
    : cfg_(cfg), parts_(parts), device_(device), opts_(std::move(opts)), comm_(std::move(comm)) {
  if (!opts_.metrics_path.empty()) metrics_.open(opts_.metrics_path, std::ios::out | std::ios::app);
}

void Trainer::log_row(const nlohmann::json& row) {
  if (metrics_.is_open()) metrics_ << row.dump() << "\n" << std::flush;
}

TrainResult Trainer::fit() {
  Task& task = *parts_.task;
  Precision& precision = *parts_.precision;
  Optimizer& optimizer = *parts_.optimizer;
  GradSync& sync = *parts_.grad_sync;
  const auto& tc = cfg_.train;
  const MetricInfo metric = task.metric();

  task.model().train();
  const int rank = comm_ ? comm_->rank() : 0;
  const int64_t world = comm_ ? comm_->size() : 1;
  // Model and optimizer state from a checkpoint: the run's own (resume) or another's (init_from).
  const std::string from = !opts_.resume_from.empty() ? opts_.resume_from : cfg_.train.init_from;
  if (!from.empty()) load_model(task.model(), from + "/model.pt");
  const ParamSet opt = sync.attach(task.model());  // what the optimizer updates (zero2: shards)
  optimizer.attach(opt);
  if (parts_.accumulation->wants_global_norm()) sync.measure_local_norm();
  if (!from.empty()) optimizer.load(optimizer_file(from, rank));
  std::vector<torch::Tensor> params = task.model().parameters();
  // Agreement across ranks at points every rank reaches; a plain value for one process.
  auto any = [&](bool local) { return comm_ ? comm_->any(local) : local; };

  TrainResult r;
  const auto fdev = torch::TensorOptions().device(device_).dtype(torch::kFloat);
  torch::Tensor nonfinite = torch::zeros({}, fdev);
  torch::Tensor window_loss = torch::zeros({}, fdev);
  int64_t window_steps = 0, window_samples = 0;
  int64_t batches = 0;  // micro-batches this rank has drawn: the data position
  double last_loss = 0;
  int64_t first_step = 1;
  double clock0 = 0;  // the loop clock at the first step (a resumed run continues its clock)
  // What a checkpoint carries besides the step, the loop clock and the loss window (below).
  const std::vector<StateField> state = {
      bind("batches", batches), bind("samples", r.samples), bind("tokens", r.tokens), bind("eval_s", r.eval_s),
      bind("checkpoint_s", r.checkpoint_s), bind("time_to_target_s", r.time_to_target_s),
      bind("final_metric", r.final_metric), bind("best_metric", r.best_metric),
      bind("final_train_loss", r.final_train_loss), bind("curve", r.curve), bind("window_steps", window_steps),
      bind("window_samples", window_samples), bind("last_loss", last_loss)};
  nlohmann::json resumed;  // the checkpoint's loop state (resume only)
  if (!opts_.resume_from.empty()) {
    resumed = load_resume_state(opts_.resume_from, rank, static_cast<int>(world), parts_, device_);
    const nlohmann::json& st = resumed;
    for (const auto& f : state) f.set(st.at(f.key));
    first_step = st.at("step").get<int64_t>() + 1;
    window_loss.fill_(st.at("window_loss").get<double>());
    clock0 = st.at("loop_s").get<double>();
    r.steps = first_step - 1;
    r.resumed_step = r.steps;
    r.resumed_loop_s = clock0;
    task.skip_to(batches);
    log::info(strf("resumed from %s: step %lld, %lld samples, %.1fs of training loop",
                   opts_.resume_from.c_str(), static_cast<long long>(r.steps), static_cast<long long>(r.samples), clock0));
  }
  // The micro-step from a CUDA graph (train.cuda_graph), or its data flow (static gradients) run
  // eagerly: distributed.gradient_as_bucket_view, and tests.
  std::unique_ptr<StepGraph> graph;
  bool graph_refused = false;
  if (tc.cuda_graph) {
    const std::string why = StepGraph::unsupported(cfg_, device_);
    if (why.empty()) graph = std::make_unique<StepGraph>(parts_, device_, /*capture=*/true);
    else {
      graph_refused = true;
      log::warn("train.cuda_graph: eager steps: " + why);
      r.cuda_graph = {{"enabled", false}, {"reason", why}};
    }
  }
  if (const char* e = std::getenv("EFFTRAIN_STATIC_GRADS");
      !graph && ((e && std::string(e) == "1") || (cfg_.distributed.gradient_as_bucket_view && sync.communicates())))
    graph = std::make_unique<StepGraph>(parts_, device_, /*capture=*/false);
  std::unique_ptr<OnlinePolicy> policy;
  if (cfg_.policy.mode == "auto") {
    policy = std::make_unique<OnlinePolicy>(cfg_, parts_, device_, opts_.block_memory, opts_.segments, world);
    // A checkpoint written before the policy state was saved has none: the policy decides again.
    if (resumed.contains("policy") && policy->restore(resumed["policy"]) && graph) graph->recapture();
  }
  metrics::StepProfiler profiler(tc.profile_start_step, tc.profile_steps, opts_.profile_path, device_);
  metrics::MemorySnapshot snapshot(opts_.memory_snapshot_path.empty() ? 0 : tc.memory_snapshot_steps, first_step,
                                   opts_.memory_snapshot_path, device_);
  auto window_start = Clock::now();

  metrics::synchronize(device_);
  const auto t0 = Clock::now() - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(clock0));
  std::optional<Clock::time_point> steady_t0;
  double steady_excluded0 = 0;
  const int64_t samples_at_start = r.samples, tokens_at_start = r.tokens;
  const double excluded_at_start = r.eval_s + r.checkpoint_s;
  int64_t steady_samples0 = 0, steady_tokens0 = 0, steady_step0 = 0;
  int64_t prev_k = 0;  // the step before's k (train.timing_restart_on_k_change)

  // train.eval_every_samples: the next evaluation is due once r.samples reaches this (a resumed run
  // continues from its own count).
  const int64_t eval_samples = tc.eval_every_samples;
  auto next_multiple = [&](int64_t samples) { return (samples / eval_samples + 1) * eval_samples; };
  int64_t next_eval_at = eval_samples > 0 ? next_multiple(r.samples) : 0;
  auto reached = [&](double v) {
    return tc.target && (metric.higher_is_better ? v >= *tc.target : v <= *tc.target);
  };
  bool stop = false;
  double last_checkpoint_at = clock0;
  int64_t checkpoint_step = -1;
  // Everything the loop needs to continue exactly from the end of step `step`.
  auto write_checkpoint = [&](int64_t step) {
    const auto c0 = Clock::now();
    nlohmann::json st = {{"step", step}, {"loop_s", seconds_since(t0)}, {"window_loss", window_loss.item<double>()}};
    for (const auto& f : state) st[f.key] = f.get();
    if (policy) st["policy"] = policy->state();
    r.last_checkpoint = save_checkpoint(opts_.checkpoints_root, step, st, parts_, cfg_, rank, static_cast<int>(world),
                                        comm_.get());
    ++r.checkpoints_written;
    checkpoint_step = step;
    r.checkpoint_s += seconds_since(c0);
    last_checkpoint_at = seconds_since(t0);
    log::info(strf("checkpoint %s (%.2fs)", r.last_checkpoint.c_str(), seconds_since(c0)));
  };
  const bool checkpoints = !opts_.checkpoints_root.empty();
  const auto& oc = cfg_.output;

  for (int64_t step = first_step; !stop && !(tc.max_steps > 0 && step > tc.max_steps); ++step) {
    // ---------------- one optimizer step ----------------
    profiler.before_step(step);
    // Named ranges for profiled steps (scripts/trace_phases.py); emplace ends the one before.
    std::optional<metrics::TraceRange> phase;
    phase.emplace("efftrain::zero_grad");
    const int64_t k = parts_.accumulation->next_k(step);
    const bool k_changed = tc.timing_restart_on_k_change && prev_k != 0 && k != prev_k;
    prev_k = k;
    dist::maybe_fault(rank, "step=" + std::to_string(step));
    if (graph) graph->zero_grad();
    else optimizer.zero_grad();
    torch::Tensor step_loss = torch::zeros({}, fdev);
    for (int64_t i = 0; i < k; ++i) {
      phase.emplace("efftrain::micro_step");
      Batch b = task.next_batch();
      ++batches;
      torch::Tensor loss;
      if (graph) {
        loss = graph->micro_step(b, k, /*last=*/i == k - 1);
      } else {
        {
          auto scope = precision.forward_scope();
          loss = task.loss(b);
        }
        sync.before_backward(/*last=*/i == k - 1);
        precision.scale_loss(loss / static_cast<double>(k)).backward();
      }
      parts_.accumulation->after_backward(i, k, params, precision.loss_scale());
      step_loss += loss.detach().to(torch::kFloat) / static_cast<double>(k);
      r.samples += b.samples * world;  // every rank draws the same number
      r.tokens += b.tokens * world;
      window_samples += b.samples * world;
    }
    phase.emplace("efftrain::grad_sync");
    sync.finish();
    torch::Tensor global_sq, local_sq, clip_sq;
    if (parts_.accumulation->wants_global_norm()) {
      torch::NoGradGuard ng;
      global_sq = squared_norm(defined_grads(opt.tensors), torch::kDouble);  // still scaled
      local_sq = sync.local_sq_norm();
    }
    torch::Tensor found_inf = precision.unscale_and_check(opt.tensors);
    std::vector<torch::Tensor> grads;
    if (cfg_.optim.grad_clip > 0) {
      torch::NoGradGuard ng;
      grads = defined_grads(opt.tensors);
      clip_sq = squared_norm(grads);
    }
    if (comm_) {
      // The step's scalars summed over the ranks in one collective (every collective is a
      // point where each rank waits for the last): each rank's own gradient norm (adaptive k)
      // and, where each rank holds a shard (zero2), the parts of the shards' norms and of the
      // found-inf flag (an overflow in any shard skips the step on every rank).
      std::vector<torch::Tensor*> summed;
      if (local_sq.defined()) summed.push_back(&local_sq);
      if (sync.sharded())
        for (torch::Tensor* t : {&global_sq, &found_inf, &clip_sq})
          if (t->defined()) summed.push_back(t);
      std::vector<torch::Tensor> in;
      for (auto* t : summed) in.push_back(*t);
      const auto out = comm_->sum_scalars(in);
      for (size_t i = 0; i < summed.size(); ++i) {
        if (summed[i] == &found_inf) found_inf.copy_(out[i].clamp_max(1.0));  // the precision's own flag
        else *summed[i] = out[i];
      }
    }
    if (global_sq.defined()) parts_.accumulation->after_sync(local_sq, global_sq, precision.loss_scale());
    if (clip_sq.defined()) {
      torch::NoGradGuard ng;
      auto coef = (cfg_.optim.grad_clip / (clip_sq.sqrt() + 1e-6)).clamp_max(1.0);
      at::_foreach_mul_(grads, coef);
    }
    const double lr = parts_.schedule->lr(step, r.samples) * parts_.accumulation->lr_scale();
    phase.emplace("efftrain::optimizer");
    optimizer.step(lr, found_inf);
    phase.emplace("efftrain::after_step");
    sync.after_step();
    parts_.accumulation->after_step(step, found_inf);
    precision.update();
    nonfinite.logical_or_(step_loss.isfinite().logical_not());
    window_loss += step_loss;
    ++window_steps;
    r.steps = step;
    phase.reset();
    profiler.after_step(step);
    snapshot.after_step(step);
    if (policy && policy->after_step(step, step - first_step + 1, [&](bool v) { return !any(!v); }) && graph)
      graph->recapture();

    // ---------------- bookkeeping at a steady cadence ----------------
    const bool last_by_steps = tc.max_steps > 0 && step >= tc.max_steps;
    const bool warmup_done = step == first_step - 1 + tc.timing_warmup_steps;
    const bool restart_window = k_changed && steady_t0.has_value();  // not on the last step: below
    const bool want_log = step % cfg_.output.log_every == 0 || last_by_steps;
    const bool want_eval =
        eval_samples > 0 ? r.samples >= next_eval_at : tc.eval_every > 0 && step % tc.eval_every == 0;
    if (eval_samples > 0 && want_eval) next_eval_at = next_multiple(r.samples);
    const bool want_checkpoint = checkpoints && oc.checkpoint_every_steps > 0 && step % oc.checkpoint_every_steps == 0;
    const bool time_check =
        want_log || want_eval || warmup_done || restart_window || want_checkpoint || step % 10 == 0;
    if (!time_check) continue;

    metrics::synchronize(device_);
    const double now = seconds_since(t0);
    const bool last_by_time = tc.max_time_s > 0 && any(now >= tc.max_time_s);
    const bool last = last_by_steps || last_by_time;
    if (warmup_done || (restart_window && !last)) {
      if (!warmup_done) ++r.window_restarts;
      steady_t0 = Clock::now();
      steady_samples0 = r.samples;
      steady_tokens0 = r.tokens;
      steady_step0 = step;
      steady_excluded0 = r.eval_s + r.checkpoint_s;
    }

    if (want_log || last) {
      try {
        precision.check_health(step);
      } catch (const TrainingFailed& e) {
        r.status = e.status();
        r.message = e.what();
        r.loop_s = now;
        r.train_s = now - r.eval_s - r.checkpoint_s;
        break;
      }
      if (any(nonfinite.item<float>() != 0.f)) {
        r.status = "diverged";
        r.message = "training loss became NaN or inf by step " + std::to_string(step);
        r.loop_s = now;
        r.train_s = now - r.eval_s - r.checkpoint_s;
        break;
      }
      const double span = seconds_since(window_start);
      last_loss = window_loss.item<double>() / static_cast<double>(window_steps);
      r.final_train_loss = last_loss;
      const double sps = span > 0 ? static_cast<double>(window_samples) / span : 0;
      const auto mem = metrics::peak_memory(device_);
      const double per_step = now / static_cast<double>(step);
      const double eta = tc.max_steps > 0 ? per_step * static_cast<double>(tc.max_steps - step)
                                          : tc.max_time_s - now;
      log::info(strf("step %6lld | loss %.4f | lr %.3e | %.1f samples/s | peak mem %s | ETA %s",
                     static_cast<long long>(step), last_loss, lr, sps, human_bytes(mem.allocated).c_str(),
                     human_duration(eta).c_str()));
      log_row({{"step", step}, {"time_s", now}, {"samples", r.samples}, {"tokens", r.tokens},
               {"train_loss", last_loss}, {"lr", lr}, {"samples_per_s", sps},
               {"peak_allocated_bytes", mem.allocated}});
      window_loss.zero_();
      window_steps = 0;
      window_samples = 0;
      window_start = Clock::now();
    }
    if (want_eval || last) {
      const auto e0 = Clock::now();
      EvalResult ev;
      if (rank == 0) {
        auto scope = precision.forward_scope();
        ev = task.evaluate();
      }
      if (comm_) {  // rank 0's result decides for everyone (the same stop on every rank)
        auto t = torch::tensor({ev.value, ev.loss, static_cast<double>(ev.examples)},
                               torch::TensorOptions().dtype(torch::kDouble)).to(device_);
        comm_->broadcast({t}, 0);
        t = t.cpu();
        ev.value = t[0].item<double>();
        ev.loss = t[1].item<double>();
        ev.examples = static_cast<int64_t>(t[2].item<double>());
      }
      r.eval_s += seconds_since(e0);
      const double t_after = seconds_since(t0);
      r.final_metric = ev.value;
      if (!r.best_metric || (metric.higher_is_better ? ev.value > *r.best_metric : ev.value < *r.best_metric))
        r.best_metric = ev.value;
      r.curve.push_back({{"step", step}, {"time_s", t_after}, {"train_loss", last_loss},
                         {"eval_loss", ev.loss}, {"value", ev.value}});
      log_row({{"step", step}, {"time_s", t_after}, {"eval", {{metric.name, ev.value}, {"loss", ev.loss}}}});
      log::info(strf("eval at step %lld | %s %.4f | eval loss %.4f", static_cast<long long>(step),
                     metric.name.c_str(), ev.value, ev.loss));
      if (reached(ev.value) && !r.time_to_target_s) {
        r.time_to_target_s = t_after;
        log::info(strf("target %s %g reached at step %lld after %.2fs", metric.name.c_str(), *tc.target,
                       static_cast<long long>(step), t_after));
        if (tc.stop_at_target) {
          r.status = "target_reached";
          stop = true;
        }
      }
    }
    if (last) stop = true;
    const bool due_by_time = checkpoints && oc.checkpoint_every_min > 0 &&
                             any(seconds_since(t0) - last_checkpoint_at >= 60 * oc.checkpoint_every_min);
    if (want_checkpoint || due_by_time) write_checkpoint(step);
  }

  metrics::synchronize(device_);
  const bool healthy = r.status == "completed" || r.status == "target_reached";
  if (checkpoints && oc.save_checkpoint && healthy && r.steps > 0 && checkpoint_step != r.steps)
    write_checkpoint(r.steps);
  const auto t_end = Clock::now();
  if (r.loop_s == 0) {
    r.loop_s = std::chrono::duration<double>(t_end - t0).count();
    r.train_s = r.loop_s - r.eval_s - r.checkpoint_s;
  }
  if (r.status == "completed" && r.time_to_target_s) r.status = "target_reached";
  if (graph && !graph_refused) r.cuda_graph = graph->report();  // else the reason it was refused stays
  if (policy) r.policy = policy->report();
  r.profile = profiler.report();
  r.memory_snapshot = snapshot.report();
  const double excluded = r.eval_s + r.checkpoint_s;
  if (steady_t0 && r.steps > steady_step0) {
    r.steady_steps = r.steps - steady_step0;
    r.steady_samples = r.samples - steady_samples0;
    r.steady_tokens = r.tokens - steady_tokens0;
    r.steady_s = std::chrono::duration<double>(t_end - *steady_t0).count() - (excluded - steady_excluded0);
  } else {  // too few steps for a warm-up: every step of this process counts
    r.steady_steps = r.steps - (first_step - 1);
    r.steady_samples = r.samples - samples_at_start;
    r.steady_tokens = r.tokens - tokens_at_start;
    r.steady_s = r.loop_s - clock0 - (excluded - excluded_at_start);
  }
  return r;
}

}  // namespace efftrain

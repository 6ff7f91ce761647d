#include "efftrain/engine/policy.h"

#include "efftrain/core/log.h"
#include "efftrain/core/util.h"
#include "efftrain/metrics/device.h"

namespace efftrain {

std::string running_grad_sync(const config::ExperimentConfig& cfg, int64_t world) {
  const std::string sync = cfg.distributed.resolved_grad_sync(world);
  return cfg.policy.mode == "auto" && world == 1 && sync != "none" ? "none" : sync;
}

OnlinePolicy::OnlinePolicy(const config::ExperimentConfig& cfg, Components& parts, torch::Device device,
                           std::vector<BlockMemory> blocks, std::vector<std::pair<int64_t, int64_t>> segments,
                           int64_t world)
    : cfg_(cfg.policy), parts_(parts), device_(device), blocks_(std::move(blocks)), segments_(std::move(segments)) {
  const std::string asked = cfg.distributed.resolved_grad_sync(world);
  if (asked != running_grad_sync(cfg, world))
    record({{"step", 0},
            {"component", "grad_sync"},
            {"action", "switched_off"},
            {"asked", asked},
            {"world_size", world},
            {"why", asked + " with one process has no other rank to communicate with or partition across: none runs "
                            "(the optimizer state stays whole, no collectives)"}});
  micro_batch_ = cfg.train.batch_size * world;
  interval_ = std::max<int64_t>(1, cfg.accumulation.interval);
  accumulation_decided_ = cfg.accumulation.mode != "adaptive";  // nothing to weigh
  budget_ = cfg_.memory_budget_bytes;
  if (budget_ == 0 && device.is_cuda()) budget_ = metrics::describe(device).total_memory_bytes;
  metrics::reset_peak_memory(device_);
}

bool OnlinePolicy::after_step(int64_t step, int64_t steps_done, const std::function<bool(bool)>& all) {
  if (steps_done < cfg_.observe_steps) return false;
  bool changed = false;
  if (!checkpointing_decided_) {
    checkpointing_decided_ = true;
    if (!segments_.empty()) changed = decide_checkpointing(step, all) || changed;
  }
  if (!accumulation_decided_) changed = decide_accumulation(step, all) || changed;
  return changed;
}

void OnlinePolicy::record(nlohmann::json d) {
  log::info("policy auto: " + d["component"].get<std::string>() + " " + d["action"].get<std::string>() + " at step " +
            std::to_string(d["step"].get<int64_t>()) + ": " + d["why"].get<std::string>());
  decisions_.push_back(std::move(d));
}

bool OnlinePolicy::decide_accumulation(int64_t step, const std::function<bool(bool)>& all) {
  // Before the first estimate: every step. Once kept: at the steps that bring a new estimate.
  if (watching_ && step % interval_ != 0) return false;
  const auto bn = parts_.accumulation->noise_scale();
  if (!all(bn.has_value())) return false;  // not adaptive, or no estimate yet: look again next step
  const bool below = all(*bn < static_cast<double>(micro_batch_));
  if (watching_ && !below) {
    ++watched_;
    return false;
  }
  nlohmann::json d = {{"step", step},
                      {"component", "accumulation"},
                      {"b_noise", *bn},
                      {"micro_batch_samples", micro_batch_},
                      {"k_before", parts_.accumulation->next_k(step + 1)}};
  if (watching_) d["estimates_kept_before"] = watched_;
  const bool frozen = below && parts_.accumulation->freeze(1, step + 1);
  accumulation_decided_ = below;  // frozen, or nothing that could be
  watching_ = !below;
  d["action"] = frozen ? "switched_off" : "kept";
  d["why"] = frozen ? strf("the gradient noise scale (%.1f samples) is below one micro-step's batch (%lld samples): "
                           "accumulating more costs time and buys no statistical efficiency; k = 1 from step %lld",
                           *bn, static_cast<long long>(micro_batch_), static_cast<long long>(step + 1))
                    : strf("the gradient noise scale (%.1f samples) is at or above one micro-step's batch (%lld "
                           "samples): larger batches still pay (each later estimate is weighed again)",
                           *bn, static_cast<long long>(micro_batch_));
  record(d);
  return frozen;
}

bool OnlinePolicy::decide_checkpointing(int64_t step, const std::function<bool(bool)>& all) {
  // Checkpointing: the measured peak with recomputation, and without it by the probe's estimate.
  const int64_t peak = metrics::peak_memory(device_).allocated;
  const int64_t with = estimate_activation_peak(blocks_, segments_);
  const int64_t without = estimate_activation_peak(blocks_, {});
  const int64_t estimated = peak - with + without;
  const int64_t usable = budget_ > 0 ? static_cast<int64_t>(static_cast<double>(budget_) * (1.0 - cfg_.headroom)) : 0;
  const bool fits = all(budget_ == 0 || estimated <= usable);
  const double recompute = recompute_forward_flops(parts_.task->block_forward_flops_per_sample(), segments_);
  nlohmann::json d = {{"step", step},
                      {"component", "checkpointing"},
                      {"action", fits ? "switched_off" : "kept"},
                      {"measured_peak_bytes", peak},
                      {"estimated_peak_without_bytes", estimated},
                      {"block_activation_bytes_with", with},
                      {"block_activation_bytes_without", without},
                      {"usable_bytes", budget_ > 0 ? nlohmann::json(usable) : nlohmann::json(nullptr)},
                      {"recompute_forward_flops_per_sample", recompute}};
  if (fits) {
    d["why"] = budget_ == 0 ? "no memory budget: recomputation costs time and buys nothing"
                            : strf("the peak without recomputation (%.2f GiB, estimated) fits the budget less the "
                                   "headroom (%.2f GiB): recomputation costs time and buys nothing",
                                   gib(estimated), gib(usable));
    parts_.task->set_checkpoint_segments({});
    segments_.clear();
  } else {
    d["why"] = estimated <= usable
                   ? std::string("another rank's peak without recomputation would not fit: kept on every rank")
                   : strf("without recomputation the peak would be %.2f GiB (estimated), over the budget less the "
                          "headroom (%.2f GiB): the memory it saves is needed",
                          gib(estimated), gib(usable));
  }
  record(d);
  return fits;
}

nlohmann::json OnlinePolicy::state() const {
  return {{"checkpointing_decided", checkpointing_decided_}, {"accumulation_decided", accumulation_decided_},
          {"watching", watching_},          {"watched", watched_},
          {"segments", segments_},          {"decisions", decisions_}};
}

bool OnlinePolicy::restore(const nlohmann::json& st) {
  checkpointing_decided_ = st.at("checkpointing_decided").get<bool>();
  accumulation_decided_ = st.at("accumulation_decided").get<bool>();
  watching_ = st.at("watching").get<bool>();
  watched_ = st.at("watched").get<int64_t>();
  decisions_ = st.at("decisions");
  const auto segments = st.at("segments").get<std::vector<std::pair<int64_t, int64_t>>>();
  if (segments == segments_) return false;
  parts_.task->set_checkpoint_segments(segments);
  segments_ = segments;
  return true;
}

nlohmann::json OnlinePolicy::report() const {
  return {{"mode", "auto"},
          {"memory_budget_bytes", budget_ > 0 ? nlohmann::json(budget_) : nlohmann::json(nullptr)},
          {"headroom", cfg_.headroom},
          {"observe_steps", cfg_.observe_steps},
          {"memory_source", metrics::peak_memory(device_).source},
          {"checkpointing_segments_at_end", segments_},
          {"accumulation_estimates_watched", watched_},
          {"decisions", decisions_}};
}

}  // namespace efftrain

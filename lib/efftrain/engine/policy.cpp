#include "efftrain/engine/policy.h"

#include "efftrain/core/log.h"
#include "efftrain/core/util.h"
#include "efftrain/metrics/device.h"

namespace efftrain {

OnlinePolicy::OnlinePolicy(const config::ExperimentConfig& cfg, Components& parts, torch::Device device,
                           std::vector<BlockMemory> blocks, std::vector<std::pair<int64_t, int64_t>> segments)
    : cfg_(cfg.policy), parts_(parts), device_(device), blocks_(std::move(blocks)), segments_(std::move(segments)) {
  budget_ = cfg_.memory_budget_bytes;
  if (budget_ == 0 && device.is_cuda()) budget_ = metrics::describe(device).total_memory_bytes;
  metrics::reset_peak_memory(device_);
}

bool OnlinePolicy::after_step(int64_t step, int64_t steps_done, const std::function<bool(bool)>& all) {
  if (decided_ || steps_done < cfg_.observe_steps) return false;
  decided_ = true;
  if (segments_.empty()) return false;
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
  log::info("policy auto: checkpointing " + d["action"].get<std::string>() + " at step " + std::to_string(step) +
            ": " + d["why"].get<std::string>());
  decisions_.push_back(d);
  return fits;
}

nlohmann::json OnlinePolicy::report() const {
  return {{"mode", "auto"},
          {"memory_budget_bytes", budget_ > 0 ? nlohmann::json(budget_) : nlohmann::json(nullptr)},
          {"headroom", cfg_.headroom},
          {"observe_steps", cfg_.observe_steps},
          {"memory_source", metrics::peak_memory(device_).source},
          {"checkpointing_segments_at_end", segments_},
          {"decisions", decisions_}};
}

}  // namespace efftrain

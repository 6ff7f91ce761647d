// engine::OnlinePolicy: `policy.mode: auto` during a real run (issue 9's online half). After
// `policy.observe_steps` optimizer steps it weighs each optimization it knows by measurement
// and switches off the ones whose cost buys nothing. Decided now:
//  - activation checkpointing: its benefit is memory. The peak allocated over the observed steps
//    (with recomputation) plus what the placement saves by the block probe's estimate gives the
//    peak without it; when that fits the budget less the headroom, recomputation is switched off
//    (its cost is the recompute FLOPs, reported), otherwise kept.
//  - adaptive accumulation: its benefit is statistical efficiency, which exists only when the
//    gradient noise scale exceeds the batch a single micro-step already uses (micro-batch x world
//    size). At the first noise estimate at or after observe_steps, when B_noise is below that,
//    k is frozen at 1 (accumulating more only costs time and the per-step norm measurements),
//    otherwise adaptation is kept -- and watched: each later estimate (every
//    accumulation.interval steps) is weighed the same way, and the first one below freezes it.
//  - gradient sync: ddp or zero2 with one process has nothing to communicate or partition; it is
//    replaced by none before training (running_grad_sync), and that decision is reported at step 0.
// Every decision is logged and reported with the numbers behind it (optimizations.policy).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "efftrain/engine/trainer.h"

namespace efftrain {

// The grad sync that runs with `world` processes: distributed.grad_sync resolved (auto: none for
// one process), except that policy auto runs none where ddp or zero2 would run in one process.
std::string running_grad_sync(const config::ExperimentConfig& cfg, int64_t world);

class OnlinePolicy {
 public:
  // `blocks`: the probe of each block's activation memory (without recomputation);
  // `segments`: the recomputed segments in use. Resets the device's peak-memory statistics, so
  // that the peak it measures is the training steps'.
  OnlinePolicy(const config::ExperimentConfig& cfg, Components& parts, torch::Device device,
               std::vector<BlockMemory> blocks, std::vector<std::pair<int64_t, int64_t>> segments, int64_t world = 1);
  // After each optimizer step (`steps_done` of this process); true when a decision changed
  // what a step runs (a captured step graph must then be captured again). `all(v)` is true
  // when v is true on every rank: a switch happens on all ranks or on none.
  bool after_step(int64_t step, int64_t steps_done, const std::function<bool(bool)>& all);
  nlohmann::json report() const;
  // What a checkpoint carries: the decisions made and what is still watched. restore() puts a
  // checkpoint's back (a resumed run neither observes nor decides again) and switches
  // checkpointing off again where it had been; true when that changed what a step runs.
  nlohmann::json state() const;
  bool restore(const nlohmann::json& state);

 private:
  const config::PolicyConfig cfg_;
  Components& parts_;
  torch::Device device_;
  std::vector<BlockMemory> blocks_;
  std::vector<std::pair<int64_t, int64_t>> segments_;
  bool decide_checkpointing(int64_t step, const std::function<bool(bool)>& all);
  bool decide_accumulation(int64_t step, const std::function<bool(bool)>& all);
  void record(nlohmann::json d);

  int64_t budget_ = 0;  // bytes; 0 = none
  int64_t micro_batch_ = 0;  // samples of one micro-step over all ranks
  int64_t interval_ = 1;     // optimizer steps between noise estimates
  bool checkpointing_decided_ = false, accumulation_decided_ = false;
  bool watching_ = false;    // accumulation was kept: later estimates are weighed too
  int64_t watched_ = 0;      // estimates weighed since, all at or above the micro-step's batch
  nlohmann::json decisions_ = nlohmann::json::array();
};

}  // namespace efftrain

// train.profile_start_step: LibTorch's Kineto profiler (CPU ops + CUDA kernels) around a few
// optimizer steps, saved as a Chrome trace that chrome://tracing, Perfetto and
// scripts/profile_summary.py read. The profiled steps count in the throughput like any other;
// profile outside the timed window, or in a run of its own.
#pragma once

#include <ATen/record_function.h>
#include <torch/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace efftrain::metrics {

// A named range of host time in a profiler trace (a user annotation; scripts/trace_phases.py
// attributes the GPU work launched inside it); nothing unless a profiler is recording.
class TraceRange {
 public:
  explicit TraceRange(std::string_view name) : rf_(at::RecordScope::USER_SCOPE) {
    if (rf_.isActive()) rf_.before(name, c10::ArrayRef<const c10::IValue>{});
  }
  TraceRange(const TraceRange&) = delete;
  TraceRange& operator=(const TraceRange&) = delete;

 private:
  at::RecordFunction rf_;
};

class StepProfiler {
 public:
  // Profiles steps [start, start + steps); start 0 = off. `trace_path`: the file to write.
  StepProfiler(int64_t start, int64_t steps, std::string trace_path, torch::Device device);
  ~StepProfiler();
  void before_step(int64_t step);
  // After the step's work was queued: at the last profiled step waits for the device and saves.
  void after_step(int64_t step);
  // {"enabled", "steps": [first, last], "trace": path} or {"enabled": false}.
  nlohmann::json report() const;

 private:
  int64_t start_, steps_;
  std::string path_;
  torch::Device device_;
  bool active_ = false, saved_ = false;
};

// train.memory_snapshot_steps: the CUDA caching allocator's history -- every allocation and free
// with its C++ stack (named from the binaries' symbol and line tables: TORCH_SYMBOLIZE_MODE fast
// unless the environment sets it), from before the model is built -- through the first N
// optimizer steps of the process, saved as the pickle PyTorch's memory tools read
// (pytorch.org/memory_viz, torch.cuda._memory_viz; scripts/memory_summary.py lists what is live at
// the peak). Stacks are gathered at every allocation: the recorded steps run slower.
// start_memory_history: starts recording on a CUDA device (nothing elsewhere).
void start_memory_history(const torch::Device& device);
class MemorySnapshot {
 public:
  // Saves after `steps` steps counted from `first_step` (0 = off) to `path`.
  MemorySnapshot(int64_t steps, int64_t first_step, std::string path, torch::Device device);
  ~MemorySnapshot();
  void after_step(int64_t step);
  // {"steps", "file"} once saved, else null.
  nlohmann::json report() const;

 private:
  int64_t last_;
  std::string path_;
  bool recording_, saved_ = false;
};

}  // namespace efftrain::metrics

#include "efftrain/metrics/profiler.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/csrc/cuda/memory_snapshot.h>

#include <cstdlib>
#include <filesystem>

#include "efftrain/core/files.h"
#include "efftrain/core/log.h"
#include "efftrain/core/util.h"
#include "efftrain/metrics/device.h"

namespace efftrain::metrics {

namespace prof = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

StepProfiler::StepProfiler(int64_t start, int64_t steps, std::string trace_path, torch::Device device)
    : start_(start), steps_(steps), path_(std::move(trace_path)), device_(device) {}

StepProfiler::~StepProfiler() {
  if (active_) prof::disableProfiler();  // a run that stopped inside the window: nothing saved
}

void StepProfiler::before_step(int64_t step) {
  if (start_ <= 0 || step != start_ || active_ || saved_) return;
  synchronize(device_);  // the trace holds these steps' kernels, not the queued tail of earlier ones
  std::set<ActivityType> acts{ActivityType::CPU};
  if (device_.is_cuda()) acts.insert(ActivityType::CUDA);
  const ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/false, /*profile_memory=*/false);
  prof::prepareProfiler(config, acts);
  prof::enableProfiler(config, acts);
  active_ = true;
}

void StepProfiler::after_step(int64_t step) {
  if (!active_ || step != start_ + steps_ - 1) return;
  synchronize(device_);
  auto result = prof::disableProfiler();
  active_ = false;
  files::make_dirs(std::filesystem::path(path_).parent_path().string());
  files::write_through_partial(path_, [&](const std::string& tmp) { result->save(tmp); });
  saved_ = true;
  log::info("profile of steps " + std::to_string(start_) + ".." + std::to_string(step) + " -> " + path_);
}

nlohmann::json StepProfiler::report() const {
  if (!saved_) return {{"enabled", start_ > 0}, {"saved", false}};
  return {{"enabled", true}, {"saved", true}, {"steps", {start_, start_ + steps_ - 1}}, {"trace", path_}};
}

void start_memory_history(const torch::Device& device) {
  if (!device.is_cuda()) return;
  // LibTorch names C++ frames by dladdr unless told otherwise: the executable's own functions are
  // not in its dynamic symbol table. The fast symbolizer reads the symbol and line tables.
  setenv("TORCH_SYMBOLIZE_MODE", "fast", /*overwrite=*/0);
  torch::cuda::_record_memory_history("all", "all", "all");
}

MemorySnapshot::MemorySnapshot(int64_t steps, int64_t first_step, std::string path, torch::Device device)
    : last_(first_step + steps - 1), path_(std::move(path)), recording_(steps > 0 && device.is_cuda()) {
  if (steps > 0 && !device.is_cuda())
    log::warn("train.memory_snapshot_steps: the allocator history is the CUDA caching allocator's; none on " +
              device.str());
}

MemorySnapshot::~MemorySnapshot() {
  if (!recording_) return;
  torch::cuda::_record_memory_history(std::nullopt);
  log::warn(strf("train.memory_snapshot_steps: the run ended before step %lld; no snapshot saved",
                 static_cast<long long>(last_)));
}

void MemorySnapshot::after_step(int64_t step) {
  if (!recording_ || step != last_) return;
  const auto pickled = torch::cuda::_memory_snapshot_pickled();
  torch::cuda::_record_memory_history(std::nullopt);
  recording_ = false;
  write_file_atomic(path_, pickled);
  saved_ = true;
  log::info(strf("memory snapshot through step %lld (%.1f MB) -> %s", static_cast<long long>(step),
                 static_cast<double>(pickled.size()) / 1e6, path_.c_str()));
}

nlohmann::json MemorySnapshot::report() const {
  if (!saved_) return nullptr;
  return {{"steps", last_}, {"file", path_}};
}

}  // namespace efftrain::metrics

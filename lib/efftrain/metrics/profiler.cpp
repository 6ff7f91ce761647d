#include "efftrain/metrics/profiler.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <filesystem>

#include "efftrain/core/files.h"
#include "efftrain/core/log.h"
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

}  // namespace efftrain::metrics

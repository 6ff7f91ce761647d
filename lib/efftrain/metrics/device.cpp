#include "efftrain/metrics/device.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/CPUAllocator.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/cuda.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>

#include "efftrain/core/error.h"
#include "efftrain/core/util.h"

namespace efftrain::metrics {

namespace {

// c10's CPU allocator with a count of live bytes: each block carries its size in a header of
// one alignment unit (64 bytes, so the data keeps the default allocator's alignment).
class CountingCpuAllocator final : public c10::Allocator {
 public:
  static constexpr size_t kHeader = 64;
  static inline std::atomic<int64_t> current{0}, peak{0};
  static inline c10::Allocator* inner = nullptr;
  static inline c10::DeleterFnPtr inner_free = nullptr;

  c10::DataPtr allocate(size_t n) override {
    if (n == 0) return {nullptr, nullptr, &release, c10::Device(c10::DeviceType::CPU)};
    auto* base = static_cast<char*>(inner->raw_allocate(n + kHeader));
    *reinterpret_cast<int64_t*>(base) = static_cast<int64_t>(n);
    const int64_t now = current.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
    for (int64_t p = peak.load(); now > p && !peak.compare_exchange_weak(p, now);) {
    }
    void* data = base + kHeader;
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  static void release(void* data) {
    if (data == nullptr) return;
    char* base = static_cast<char*>(data) - kHeader;
    current.fetch_sub(*reinterpret_cast<int64_t*>(base));
    inner_free(base);
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

bool cpu_tracked() { return CountingCpuAllocator::inner != nullptr; }

}  // namespace

void track_cpu_memory() {
  if (cpu_tracked()) return;
  CountingCpuAllocator::inner = c10::GetCPUAllocator();
  CountingCpuAllocator::inner_free = CountingCpuAllocator::inner->raw_deleter();
  TORCH_CHECK(CountingCpuAllocator::inner_free != nullptr, "the CPU allocator has no raw deleter");
  static auto* counting = new CountingCpuAllocator();  // never destroyed: tensors may outlive main
  c10::SetCPUAllocator(counting, /*priority=*/100);
}

torch::Device resolve_device(const std::string& wanted, int local_rank) {
  const bool have_cuda = torch::cuda::is_available();
  if (wanted == "cuda" && !have_cuda)
    throw UserError("device: cuda was requested but no CUDA device is available (use --device cpu)");
  if (wanted == "cpu" || !have_cuda) return torch::Device(torch::kCPU);
  const int count = static_cast<int>(torch::cuda::device_count());
  if (local_rank >= count)
    throw UserError("LOCAL_RANK " + std::to_string(local_rank) + " has no GPU: only " +
                    std::to_string(count) + " visible");
  // The worker binds its GPU before anything else touches CUDA (torch.cuda.set_device(local_rank)
  // in a torchrun script): a CUDA call made while the current device is still 0 opens a context
  // on GPU 0, which rank 0 then shares with every other rank.
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(local_rank));
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

std::vector<int> contexts_elsewhere(const torch::Device& device) {
  std::vector<int> out;
  if (!device.is_cuda()) return out;
  const int count = static_cast<int>(torch::cuda::device_count());
  for (int i = 0; i < count; ++i)
    if (i != device.index() && c10::cuda::hasPrimaryContext(static_cast<c10::DeviceIndex>(i))) out.push_back(i);
  return out;
}

namespace {
std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  return "cpu";
}

std::string cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) return line;
  return "";
}

double cpu_mhz() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("cpu MHz", 0) == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) return std::stod(line.substr(p + 1));
    }
  return 2000.0;
}

std::string version_string(long v, long major_div, long minor_div, long minor_mod) {
  if (v <= 0) return "";
  return std::to_string(v / major_div) + "." + std::to_string((v / minor_div) % minor_mod);
}
}  // namespace

DeviceInfo describe(const torch::Device& device) {
  DeviceInfo info;
  if (at::hasCUDA()) {
    try {
      info.cuda_version = version_string(at::detail::getCUDAHooks().versionCUDART(), 1000, 10, 100);
    } catch (...) {
    }
  }
  if (device.is_cuda()) {
    const auto* prop = at::cuda::getDeviceProperties(device.index());
    info.name = prop->name;
    info.total_memory_bytes = static_cast<int64_t>(prop->totalGlobalMem);
    try {
      info.cudnn_version = std::to_string(at::detail::getCUDAHooks().versionRuntimeCuDNN());
    } catch (...) {
    }
  } else {
    info.name = cpu_model_name();
  }
  return info;
}

void reset_peak_memory(const torch::Device& device) {
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
  else if (cpu_tracked()) CountingCpuAllocator::peak.store(CountingCpuAllocator::current.load());
}

MemoryPeak peak_memory(const torch::Device& device) {
  MemoryPeak m;
  if (device.is_cuda()) {
    const auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    constexpr size_t kAggregate = 0;
    m.allocated = s.allocated_bytes[kAggregate].peak;
    m.reserved = s.reserved_bytes[kAggregate].peak;
    m.source = "cuda_caching_allocator";
  } else if (cpu_tracked()) {
    m.allocated = CountingCpuAllocator::peak.load();
    m.reserved = peak_rss_bytes();
    m.source = "cpu_tensor_allocator";
  } else {
    m.allocated = m.reserved = peak_rss_bytes();
    m.source = "process_peak_rss";
  }
  return m;
}

int64_t current_allocated(const torch::Device& device) {
  if (!device.is_cuda()) return cpu_tracked() ? CountingCpuAllocator::current.load() : peak_rss_bytes();
  const auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  return s.allocated_bytes[0].current;
}

PeakFlops peak_flops(const std::string& name, bool is_cuda, const std::string& dtype, bool tf32,
                     double override_tflops) {
  if (override_tflops > 0) return {override_tflops * 1e12, "config:output.peak_tflops"};
  if (is_cuda) {
    // Dense (no sparsity) peaks from NVIDIA's datasheets, SXM parts.
    struct Row { const char* match; double fp32, tf32, half; };
    static const Row table[] = {
        {"H200", 67e12, 494.5e12, 989.4e12},
        {"H100", 67e12, 494.5e12, 989.4e12},
        {"A100", 19.5e12, 156e12, 312e12},
    };
    for (const auto& r : table) {
      if (name.find(r.match) == std::string::npos) continue;
      const bool half = dtype == "bfloat16" || dtype == "float16";
      const double v = half ? r.half : (tf32 ? r.tf32 : r.fp32);
      return {v, std::string("table:") + r.match + " " + (half ? dtype : (tf32 ? "tf32" : "fp32"))};
    }
    return {0, "unknown device (set output.peak_tflops)"};
  }
  // CPU estimate: cores x clock x FP32 FLOPs per cycle (2 FMA units x SIMD lanes x 2).
  const std::string flags = cpu_flags();
  const double lanes = flags.find(" avx512f") != std::string::npos ? 16
                       : flags.find(" avx2") != std::string::npos  ? 8
                                                                  : 4;
  const double cores = std::max(1u, std::thread::hardware_concurrency());
  const double mhz = cpu_mhz();
  return {cores * mhz * 1e6 * lanes * 2 * 2,
          "estimate:" + std::to_string(static_cast<int>(cores)) + " cores x " +
              std::to_string(static_cast<int>(mhz)) + " MHz x " + std::to_string(static_cast<int>(lanes * 4)) +
              " FP32 FLOP/cycle"};
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

}  // namespace efftrain::metrics

// Facts about the training device: name, versions, memory peaks, dense peak FLOP/s for MFU.
#pragma once

#include <torch/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace efftrain::metrics {

// Resolves "auto" | "cpu" | "cuda" (LOCAL_RANK picks the GPU). UserError if CUDA is asked
// for and not available.
torch::Device resolve_device(const std::string& wanted, int local_rank);
// The GPUs other than `device` on which this process holds a CUDA context (a worker should hold
// none: each costs memory there, and its owner shares that GPU with this process).
std::vector<int> contexts_elsewhere(const torch::Device& device);

struct DeviceInfo {
  std::string name;          // "NVIDIA H100 80GB HBM3", or the CPU model
  std::string cuda_version;  // runtime version, empty on CPU-only machines
  std::string cudnn_version;
  int64_t total_memory_bytes = 0;
};
DeviceInfo describe(const torch::Device& device);

struct MemoryPeak {
  int64_t allocated = 0;
  int64_t reserved = 0;
  std::string source;  // "cuda_caching_allocator" | "cpu_tensor_allocator" | "process_peak_rss"
};
// CPU runs: counts the bytes of CPU tensors from here on (c10's CPU allocator, wrapped), so that
// allocated memory, its peak and the block probe mean on the CPU what they mean on CUDA.
// Tensors that exist already are not counted. Idempotent.
void track_cpu_memory();
void reset_peak_memory(const torch::Device& device);
MemoryPeak peak_memory(const torch::Device& device);
int64_t current_allocated(const torch::Device& device);

struct PeakFlops {
  double flops_per_s = 0;  // 0 when unknown
  std::string source;      // "table:H100 bf16", "config", "estimate:cpu ..."
};
// Dense peak of `device_name` for the compute dtype ("float32" with or without TF32,
// "bfloat16", "float16"); `override_tflops` > 0 wins.
PeakFlops peak_flops(const std::string& device_name, bool is_cuda, const std::string& dtype,
                     bool tf32, double override_tflops);

void synchronize(const torch::Device& device);

}  // namespace efftrain::metrics

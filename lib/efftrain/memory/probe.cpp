#include "efftrain/memory/probe.h"

#include "efftrain/metrics/device.h"

namespace efftrain {

std::vector<BlockMemory> measure_block_memory(torch::Device device, const std::function<void(BlockObserver)>& install,
                                              const std::function<void()>& forward) {
  std::vector<int64_t> at;
  std::vector<int64_t> out_bytes;
  install([&](int64_t i, const torch::Tensor& out) {
    metrics::synchronize(device);
    at.push_back(metrics::current_allocated(device));
    if (i >= 0) out_bytes.push_back(out.numel() * out.element_size());
  });
  forward();
  install(nullptr);
  std::vector<BlockMemory> blocks;
  for (size_t i = 0; i + 1 < at.size(); ++i) blocks.push_back({at[i + 1] - at[i], out_bytes[i]});
  return blocks;
}

}  // namespace efftrain

// Measures per-block activation memory: runs `forward` with an observer installed through
// `install` and reads the device allocator after the stem/embedding and after each block.
#pragma once

#include <torch/torch.h>

#include <functional>

#include "efftrain/memory/checkpointing.h"

namespace efftrain {

using BlockObserver = std::function<void(int64_t, const torch::Tensor&)>;

std::vector<BlockMemory> measure_block_memory(torch::Device device,
                                              const std::function<void(BlockObserver)>& install,
                                              const std::function<void()>& forward);

}  // namespace efftrain

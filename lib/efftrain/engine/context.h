// What every component factory receives: the typed config and where it runs.
#pragma once

#include <torch/types.h>

#include "efftrain/config/config.h"

namespace efftrain {

struct BuildContext {
  const config::ExperimentConfig& cfg;
  torch::Device device;
  int rank = 0;
  int world_size = 1;
};

}  // namespace efftrain

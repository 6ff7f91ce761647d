// What every component factory receives: the typed config and where it runs.
#pragma once

#include <torch/types.h>

#include <memory>

#include "efftrain/config/config.h"

namespace efftrain {

namespace dist {
class Comm;
}

struct BuildContext {
  const config::ExperimentConfig& cfg;
  torch::Device device;
  int rank = 0;
  int world_size = 1;
  std::shared_ptr<dist::Comm> comm;  // null for a single process
};

}  // namespace efftrain

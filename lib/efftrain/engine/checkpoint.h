// Checkpoints: model.pt (every parameter and buffer by name), one optimizer-state file per rank
// (with zero2, the rank's shard), and manifest.json, written last, that says what they are.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "efftrain/config/config.h"
#include "efftrain/optim/optimizer.h"

namespace efftrain {

namespace dist {
class Comm;
}

constexpr const char* kCheckpointFormat = "efftrain.checkpoint/1";

// model.pt: CPU copies of the parameters and buffers by dotted name, written atomically.
void save_model(torch::nn::Module& model, const std::string& path);
// Copies model.pt into `model`; UserError naming the file for a missing name or a wrong shape.
void load_model(torch::nn::Module& model, const std::string& path);

// Every rank writes its optimizer file; rank 0 then writes model.pt and the manifest.
void save_checkpoint(const std::string& dir, torch::nn::Module& model, const Optimizer& optimizer,
                     const config::ExperimentConfig& cfg, int rank, int world, dist::Comm* comm, int64_t steps,
                     int64_t samples);

// Checks dir/manifest.json against this run (world size, grad sync, optimizer); UserError
// naming the manifest when it does not fit.
void check_checkpoint(const std::string& dir, const config::ExperimentConfig& cfg, int world);
std::string optimizer_file(const std::string& dir, int rank);

}  // namespace efftrain

// Checkpoints (design §5). A run writes them under <out>/checkpoints/step-<N>/:
//   model.pt                 every parameter and buffer by name (rank 0's)
//   rank<r>.optimizer.pt     rank r's optimizer state (zero2: its shard)
//   rank<r>.state.pt         rank r's resume state: loop counters and clocks, RNG states, model
//                            buffers, precision and accumulation state
//   manifest.json            written last: what the files are, their sizes and SHA-256
// The folder is built as step-<N>.partial and renamed when complete, so a kill at any moment
// leaves either a whole checkpoint or none; older ones beyond output.keep_checkpoints go.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>

#include "efftrain/config/config.h"

namespace efftrain {

namespace dist {
class Comm;
}
struct Components;

constexpr const char* kCheckpointFormat = "efftrain.checkpoint/2";

// model.pt: CPU copies of the parameters and buffers by dotted name, written atomically.
void save_model(torch::nn::Module& model, const std::string& path);
// Copies model.pt into `model`; UserError naming the file for a missing name or a wrong shape.
void load_model(torch::nn::Module& model, const std::string& path);

std::string optimizer_file(const std::string& dir, int rank);
std::string state_file(const std::string& dir, int rank);

// Writes checkpoint `checkpoints_root`/step-<step> (every rank calls it; collective when
// `comm`). `trainer_state` is the loop's own state (JSON, rank-independent). Returns the folder.
std::string save_checkpoint(const std::string& checkpoints_root, int64_t step, const nlohmann::json& trainer_state,
                            Components& parts, const config::ExperimentConfig& cfg, int rank, int world,
                            dist::Comm* comm);

enum class CheckpointUse { kInitFrom, kResume };

// Checks dir/manifest.json against this run and every file against its size and (with
// `checksums`) its SHA-256; UserError naming the file and what is wrong. kResume also requires
// the same experiment (the trajectory hash: the config without output, stop limits and
// timeouts). Returns the manifest. The launcher checks without checksums (an early exit 2 for
// the wrong checkpoint) and leaves the hashing to rank 0, so the files are read once.
nlohmann::json verify_checkpoint(const std::string& dir, const config::ExperimentConfig& cfg, int world,
                                 CheckpointUse use, bool checksums = true);

// The checkpoint a spec names: a checkpoint folder (itself), or a run folder / a checkpoints
// folder (its newest checkpoint that verifies; invalid newer ones are skipped with a warning).
// Empty when a run or checkpoints folder holds none. UserError when `spec` does not exist.
// `why_none` (optional) gets the newest skipped checkpoint's problem when none is valid.
std::string find_checkpoint(const std::string& spec, const config::ExperimentConfig& cfg, int world,
                            CheckpointUse use, std::string* why_none = nullptr, bool checksums = true);

// The resume state of `rank` in checkpoint `dir`: restores the model buffers (several ranks),
// the precision and accumulation state and the RNG states (CPU, and `device`'s CUDA
// generator), and returns the loop's state.
nlohmann::json load_resume_state(const std::string& dir, int rank, int world, Components& parts, torch::Device device);

// Hash of the settings that shape the trajectory (the resume check).
std::string trajectory_hash(const config::ExperimentConfig& cfg);
// torch's archive writer to path.partial, fsync, rename: never a torn file at `path`.
void save_archive_durably(torch::serialize::OutputArchive& a, const std::string& path);

}  // namespace efftrain

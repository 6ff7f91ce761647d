#include "efftrain/engine/checkpoint.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/util.h"
#include "efftrain/dist/comm.h"

namespace efftrain {

namespace fs = std::filesystem;

namespace {
// The grad sync that actually runs (auto resolved).
std::string effective_sync(const config::ExperimentConfig& cfg, int world) {
  if (cfg.distributed.grad_sync != "auto") return cfg.distributed.grad_sync;
  return world > 1 ? cfg.distributed.auto_sync : "none";
}
}  // namespace

void save_model(torch::nn::Module& model, const std::string& path) {
  torch::serialize::OutputArchive archive;
  torch::NoGradGuard ng;
  for (const auto& kv : model.named_parameters()) archive.write(kv.key(), kv.value().detach().cpu());
  for (const auto& kv : model.named_buffers()) archive.write(kv.key(), kv.value().detach().cpu(), /*is_buffer=*/true);
  const std::string tmp = path + ".partial";
  archive.save_to(tmp);
  files::rename(tmp, path);
}

void load_model(torch::nn::Module& model, const std::string& path) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw UserError(path + ": cannot read the model archive (" + e.what_without_backtrace() + ")");
  }
  torch::NoGradGuard ng;
  auto copy = [&](const std::string& name, torch::Tensor& dst) {
    torch::Tensor src;
    if (!archive.try_read(name, src)) throw UserError(path + ": no tensor '" + name + "' (a different model?)");
    if (src.sizes() != dst.sizes())
      throw UserError(path + ": '" + name + "' has shape " + c10::str(src.sizes()) + ", the model has " +
                      c10::str(dst.sizes()));
    dst.copy_(src);
  };
  for (auto& kv : model.named_parameters()) copy(kv.key(), kv.value());
  for (auto& kv : model.named_buffers()) copy(kv.key(), kv.value());
}

std::string optimizer_file(const std::string& dir, int rank) {
  return (fs::path(dir) / ("rank" + std::to_string(rank) + ".optimizer.pt")).string();
}

void save_checkpoint(const std::string& dir, torch::nn::Module& model, const Optimizer& optimizer,
                     const config::ExperimentConfig& cfg, int rank, int world, dist::Comm* comm, int64_t steps,
                     int64_t samples) {
  files::make_dirs(dir);
  const std::string mine = optimizer_file(dir, rank);
  optimizer.save(mine + ".partial");
  files::rename(mine + ".partial", mine);
  if (comm) comm->barrier();  // every rank's file is complete before the manifest names it
  if (rank != 0) return;
  save_model(model, (fs::path(dir) / "model.pt").string());
  nlohmann::json files_list = nlohmann::json::array({"model.pt"});
  for (int r = 0; r < world; ++r) files_list.push_back(fs::path(optimizer_file(dir, r)).filename().string());
  const nlohmann::json manifest = {{"format", kCheckpointFormat},
                                   {"world_size", world},
                                   {"grad_sync", effective_sync(cfg, world)},
                                   {"optimizer", cfg.optim.name},
                                   {"task", cfg.task.name},
                                   {"config_hash", config::config_hash(cfg)},
                                   {"steps", steps},
                                   {"samples", samples},
                                   {"files", files_list}};
  write_file_atomic((fs::path(dir) / "manifest.json").string(), manifest.dump(2) + "\n");
}

void check_checkpoint(const std::string& dir, const config::ExperimentConfig& cfg, int world) {
  const std::string path = (fs::path(dir) / "manifest.json").string();
  if (!files::exists(path)) throw UserError(path + ": no checkpoint manifest (train.init_from)");
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(read_file(path, "checkpoint manifest"));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not JSON (" + e.what() + ")");
  }
  if (m.value("format", "") != kCheckpointFormat)
    throw UserError(path + ": format '" + m.value("format", "") + "', expected " + kCheckpointFormat);
  const int saved = m.value("world_size", 0);
  if (saved != world)
    throw UserError(path + ": saved by " + std::to_string(saved) + " process(es); this run has " +
                    std::to_string(world) + " (sharded optimizer state loads only at the same world size)");
  for (const char* key : {"optimizer", "task"}) {
    const std::string want = key == std::string("optimizer") ? cfg.optim.name : cfg.task.name;
    if (m.value(key, "") != want)
      throw UserError(path + ": " + key + " is " + m.value(key, "") + ", this run uses " + want);
  }
  const std::string sync = effective_sync(cfg, world);
  const bool saved_sharded = m.value("grad_sync", "") == "zero2", sharded = sync == "zero2";
  if (saved_sharded != sharded)
    throw UserError(path + ": grad_sync " + m.value("grad_sync", "") + " and " + sync +
                    " keep different optimizer state (sharded or whole)");
  for (int r = 0; r < world; ++r)
    if (!files::exists(optimizer_file(dir, r))) throw UserError(optimizer_file(dir, r) + ": missing (named by " + path + ")");
}

}  // namespace efftrain

// The checkpoint files themselves, apart from the training components: model archives, the
// manifest check and the settings hash (the fuzz target builds this file alone).
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/util.h"
#include "efftrain/engine/checkpoint.h"
#include "efftrain/engine/policy.h"

namespace efftrain {

namespace fs = std::filesystem;

namespace {
std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }
}  // namespace

void save_archive_durably(torch::serialize::OutputArchive& a, const std::string& path) {
  files::write_through_partial(path, [&](const std::string& tmp) { a.save_to(tmp); });
}

std::string trajectory_hash(const config::ExperimentConfig& cfg) {
  nlohmann::json j = config::to_json(cfg);
  for (const char* k : {"name", "description", "output"}) j.erase(k);
  for (const char* k : {"max_steps", "max_time_s", "require_target", "stop_at_target"}) j["train"].erase(k);
  for (const char* k : {"timeout_s", "stop_grace_s"}) j["distributed"].erase(k);
  return sha256_hex(j.dump()).substr(0, 16);
}

void save_model(torch::nn::Module& model, const std::string& path) {
  torch::serialize::OutputArchive archive;
  torch::NoGradGuard ng;
  for (const auto& kv : model.named_parameters()) archive.write(kv.key(), kv.value().detach().cpu());
  for (const auto& kv : model.named_buffers()) archive.write(kv.key(), kv.value().detach().cpu(), /*is_buffer=*/true);
  save_archive_durably(archive, path);
}

void load_model(torch::nn::Module& model, const std::string& path) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw UserError(path + ": cannot read the model archive (" + e.what_without_backtrace() + ")");
  } catch (const std::exception& e) {  // torch's type parser throws std::runtime_error (found by fuzzing)
    throw UserError(path + ": cannot read the model archive (" + first_line(e.what()) + ")");
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
  return join_path(dir, "rank" + std::to_string(rank) + ".optimizer.pt");
}
std::string state_file(const std::string& dir, int rank) {
  return join_path(dir, "rank" + std::to_string(rank) + ".state.pt");
}

nlohmann::json verify_checkpoint(const std::string& dir, const config::ExperimentConfig& cfg, int world,
                                 CheckpointUse use, bool checksums) {
  const std::string path = join_path(dir, "manifest.json");
  if (!files::exists(path)) throw UserError(path + ": no checkpoint manifest (an incomplete or foreign folder)");
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(read_file(path, "checkpoint manifest"));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not JSON (" + e.what() + ")");
  }
  if (!m.is_object() || !m.contains("format") || !m["format"].is_string() || m["format"] != kCheckpointFormat)
    throw UserError(path + ": not a " + std::string(kCheckpointFormat) + " manifest");
  try {
    const int saved = m.at("world_size").get<int>();
    if (saved != world)
      throw UserError(path + ": saved by " + std::to_string(saved) + " process(es); this run has " +
                      std::to_string(world) + " (sharded optimizer state loads only at the same world size)");
    if (use == CheckpointUse::kResume && m.at("trajectory_hash").get<std::string>() != trajectory_hash(cfg))
      throw UserError(path + ": written by a different experiment (" + m.at("experiment").get<std::string>() +
                      ", settings hash " + m.at("trajectory_hash").get<std::string>() + "; this run's is " +
                      trajectory_hash(cfg) + "): resume needs the same settings except output, stop limits and timeouts");
    for (const char* key : {"optimizer", "task"}) {
      const std::string want = key == std::string("optimizer") ? cfg.optim.name : cfg.task.name;
      if (m.at(key).get<std::string>() != want)
        throw UserError(path + ": " + key + " is " + m.at(key).get<std::string>() + ", this run uses " + want);
    }
    const std::string sync = running_grad_sync(cfg, world), saved_sync = m.at("grad_sync").get<std::string>();
    if ((saved_sync == "zero2") != (sync == "zero2"))
      throw UserError(path + ": grad_sync " + saved_sync + " and " + sync +
                      " keep different optimizer state (sharded or whole)");
    std::vector<std::string> needed = {"model.pt"};
    for (int r = 0; r < world; ++r)
      for (const auto& f : {optimizer_file(dir, r), state_file(dir, r)}) needed.push_back(fs::path(f).filename().string());
    const auto& listed = m.at("files");
    for (const auto& name : needed) {
      auto it = std::find_if(listed.begin(), listed.end(), [&](const nlohmann::json& f) { return f.at("name") == name; });
      if (it == listed.end()) throw UserError(path + ": does not list " + name);
      const std::string file = join_path(dir, name);
      if (!files::exists(file)) throw UserError(file + ": missing (named by " + path + ")");
      const int64_t bytes = it->at("bytes").get<int64_t>();
      if (files::size_of(file) != bytes)
        throw UserError(file + ": " + std::to_string(files::size_of(file)) + " bytes, the manifest says " +
                        std::to_string(bytes) + " (truncated or replaced)");
      if (checksums && sha256_file(file) != it->at("sha256").get<std::string>())
        throw UserError(file + ": SHA-256 differs from the manifest's (the file is corrupted)");
    }
    m.at("step").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": malformed manifest (" + e.what() + ")");
  }
  return m;
}

}  // namespace efftrain

#include "efftrain/engine/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>

#include <algorithm>
#include <filesystem>

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/log.h"
#include "efftrain/core/util.h"
#include "efftrain/dist/comm.h"
#include "efftrain/engine/state.h"
#include "efftrain/engine/trainer.h"
#include "efftrain/metrics/report.h"

namespace efftrain {

namespace fs = std::filesystem;

namespace {

// The grad sync that actually runs (auto resolved).
std::string effective_sync(const config::ExperimentConfig& cfg, int world) {
  if (cfg.distributed.grad_sync != "auto") return cfg.distributed.grad_sync;
  return world > 1 ? cfg.distributed.auto_sync : "none";
}

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// Saves with torch's archive writer to path.partial, flushes it to disk and renames it.
void save_archive(torch::serialize::OutputArchive& a, const std::string& path) {
  const std::string tmp = path + ".partial";
  a.save_to(tmp);
  files::sync(tmp);
  files::rename(tmp, path);
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

// step-<N> folders of a checkpoints root, newest first (partial ones left out).
std::vector<std::string> checkpoint_folders(const std::string& root) {
  std::vector<std::string> out;
  for (const auto& name : files::list_dir(root))
    if (name.rfind("step-", 0) == 0 && name.find('.') == std::string::npos) out.push_back(join_path(root, name));
  std::reverse(out.begin(), out.end());  // zero-padded: name order is step order
  return out;
}

torch::Generator cuda_generator(torch::Device device) {
  return at::cuda::detail::getDefaultCUDAGenerator(device.index() < 0 ? 0 : device.index());
}

torch::Tensor rng_state(torch::Generator g) {
  std::lock_guard<std::mutex> l(g.mutex());
  return g.get_state();
}
void set_rng_state(torch::Generator g, const torch::Tensor& s) {
  std::lock_guard<std::mutex> l(g.mutex());
  g.set_state(s);
}

}  // namespace

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
  save_archive(archive, path);
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
  return join_path(dir, "rank" + std::to_string(rank) + ".optimizer.pt");
}
std::string state_file(const std::string& dir, int rank) {
  return join_path(dir, "rank" + std::to_string(rank) + ".state.pt");
}

std::string save_checkpoint(const std::string& root, int64_t step, const nlohmann::json& trainer_state,
                            Components& parts, const config::ExperimentConfig& cfg, int rank, int world,
                            dist::Comm* comm) {
  const std::string final_dir = join_path(root, step_name(step));
  const std::string dir = final_dir + ".partial";
  if (rank == 0) {
    files::remove_tree(dir);  // a leftover of a killed run
    files::make_dirs(dir);
  }
  if (comm) comm->barrier();

  torch::nn::Module& model = parts.task->model();
  const std::string opt_path = optimizer_file(dir, rank);
  parts.optimizer->save(opt_path + ".partial");
  files::sync(opt_path + ".partial");
  files::rename(opt_path + ".partial", opt_path);
  {
    torch::serialize::OutputArchive a, precision, accumulation, buffers;
    state::write_json(a, "trainer", trainer_state);
    a.write("rng_cpu", rng_state(at::detail::getDefaultCPUGenerator()));
    const torch::Device device = model.parameters().empty() ? torch::Device(torch::kCPU)
                                                            : model.parameters().front().device();
    if (device.is_cuda()) a.write("rng_cuda", rng_state(cuda_generator(device)));
    {
      torch::NoGradGuard ng;
      for (const auto& kv : model.named_buffers()) buffers.write(kv.key(), kv.value().detach().cpu(), true);
    }
    a.write("buffers", buffers);
    parts.precision->save_state(precision);
    a.write("precision", precision);
    parts.accumulation->save_state(accumulation);
    a.write("accumulation", accumulation);
    save_archive(a, state_file(dir, rank));
  }
  // Each rank hashes its own files; rank 0 collects the digests through the store.
  auto describe = [](const std::string& path) {
    return nlohmann::json{{"name", fs::path(path).filename().string()},
                          {"bytes", files::size_of(path)},
                          {"sha256", sha256_file(path)}};
  };
  const nlohmann::json mine = nlohmann::json::array({describe(opt_path), describe(state_file(dir, rank))});
  const std::string key = "checkpoint/" + std::to_string(step) + "/";
  if (comm) comm->publish(key + std::to_string(rank), mine.dump());
  if (rank == 0) {
    const std::string model_path = join_path(dir, "model.pt");
    save_model(model, model_path);
    nlohmann::json list = nlohmann::json::array({describe(model_path)});
    for (int r = 0; r < world; ++r) {
      const auto files_of_r = r == 0 ? mine : nlohmann::json::parse(comm->fetch(key + std::to_string(r)));
      for (const auto& f : files_of_r) list.push_back(f);
    }
    const nlohmann::json manifest = {{"format", kCheckpointFormat},
                                     {"efftrain_version", report::efftrain_version()},
                                     {"created_at", utc_timestamp_iso(unix_time_now())},
                                     {"experiment", cfg.name},
                                     {"config_hash", config::config_hash(cfg)},
                                     {"trajectory_hash", trajectory_hash(cfg)},
                                     {"world_size", world},
                                     {"grad_sync", effective_sync(cfg, world)},
                                     {"optimizer", cfg.optim.name},
                                     {"task", cfg.task.name},
                                     {"step", step},
                                     {"samples", trainer_state.value("samples", int64_t{0})},
                                     {"files", list}};
    write_file_atomic(join_path(dir, "manifest.json"), manifest.dump(2) + "\n");
    files::remove_tree(final_dir);  // the same step written again (a resumed run's end)
    files::rename(dir, final_dir);
    files::sync(root);
    if (cfg.output.keep_checkpoints > 0) {
      const auto all = checkpoint_folders(root);
      for (size_t i = static_cast<size_t>(cfg.output.keep_checkpoints); i < all.size(); ++i) files::remove_tree(all[i]);
    }
  }
  if (comm) comm->barrier();  // nobody continues (or dies) before the checkpoint is complete
  return final_dir;
}

nlohmann::json verify_checkpoint(const std::string& dir, const config::ExperimentConfig& cfg, int world,
                                 CheckpointUse use) {
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
    const std::string sync = effective_sync(cfg, world), saved_sync = m.at("grad_sync").get<std::string>();
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
      if (sha256_file(file) != it->at("sha256").get<std::string>())
        throw UserError(file + ": SHA-256 differs from the manifest's (the file is corrupted)");
    }
    m.at("step").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": malformed manifest (" + e.what() + ")");
  }
  return m;
}

std::string find_checkpoint(const std::string& spec, const config::ExperimentConfig& cfg, int world,
                            CheckpointUse use) {
  if (!files::is_dir(spec)) throw UserError(spec + ": no such checkpoint folder");
  if (files::exists(join_path(spec, "manifest.json"))) {
    verify_checkpoint(spec, cfg, world, use);
    return spec;
  }
  const std::string root = files::is_dir(join_path(spec, "checkpoints")) ? join_path(spec, "checkpoints") : spec;
  for (const auto& dir : checkpoint_folders(root)) {
    try {
      verify_checkpoint(dir, cfg, world, use);
      return dir;
    } catch (const UserError& e) {
      log::warn(std::string("skipping checkpoint: ") + e.what());
    }
  }
  return "";
}

nlohmann::json load_resume_state(const std::string& dir, int rank, int world, Components& parts, torch::Device device) {
  const std::string path = state_file(dir, rank);
  torch::serialize::InputArchive a, precision, accumulation, buffers;
  try {
    a.load_from(path);
    if (!a.try_read("precision", precision) || !a.try_read("accumulation", accumulation) ||
        !a.try_read("buffers", buffers))
      throw UserError(path + ": not a resume state (missing sections)");
    parts.precision->load_state(precision);
    parts.accumulation->load_state(accumulation);
    if (world > 1) {  // each rank's own BatchNorm statistics (rank 0's came with model.pt)
      torch::nn::Module& model = parts.task->model();
      for (auto& kv : model.named_buffers()) state::read_into(buffers, kv.key(), kv.value());
    }
    torch::Tensor rng;
    a.read("rng_cpu", rng);
    set_rng_state(at::detail::getDefaultCPUGenerator(), rng);
    if (device.is_cuda()) {
      a.read("rng_cuda", rng);
      set_rng_state(cuda_generator(device), rng);
    }
    return state::read_json(a, "trainer");
  } catch (const c10::Error& e) {
    throw UserError(path + ": cannot read the resume state (" + e.what_without_backtrace() + ")");
  } catch (const UserError& e) {
    const std::string what = e.what();
    throw UserError(what.rfind(path, 0) == 0 ? what : path + ": " + what);
  }
}

}  // namespace efftrain

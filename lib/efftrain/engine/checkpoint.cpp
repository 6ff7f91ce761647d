#include "efftrain/engine/checkpoint.h"


#include <algorithm>
#include <filesystem>

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/log.h"
#include "efftrain/core/util.h"
#include "efftrain/dist/comm.h"
#include "efftrain/engine/policy.h"
#include "efftrain/engine/state.h"
#include "efftrain/engine/trainer.h"
#include "efftrain/memory/checkpoint.h"
#include "efftrain/metrics/report.h"

namespace efftrain {

namespace fs = std::filesystem;

namespace {

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

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

// The CUDA device whose generator a checkpoint carries; -1 on the CPU.
c10::DeviceIndex rng_device(const torch::Device& device) {
  return device.is_cuda() ? std::max<c10::DeviceIndex>(device.index(), 0) : c10::DeviceIndex(-1);
}

}  // namespace

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
  files::write_through_partial(opt_path, [&](const std::string& tmp) { parts.optimizer->save(tmp); });
  {
    torch::serialize::OutputArchive a, precision, accumulation, buffers;
    state::write_json(a, "trainer", trainer_state);
    const torch::Device device = model.parameters().empty() ? torch::Device(torch::kCPU)
                                                            : model.parameters().front().device();
    const RngState rng = get_rng_state(rng_device(device));
    a.write("rng_cpu", rng.cpu);
    if (rng.dev >= 0) a.write("rng_cuda", rng.cuda);
    {
      torch::NoGradGuard ng;
      for (const auto& kv : model.named_buffers()) buffers.write(kv.key(), kv.value().detach().cpu(), true);
    }
    a.write("buffers", buffers);
    parts.precision->save_state(precision);
    a.write("precision", precision);
    parts.accumulation->save_state(accumulation);
    a.write("accumulation", accumulation);
    save_archive_durably(a, state_file(dir, rank));
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
                                     {"grad_sync", running_grad_sync(cfg, world)},
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

std::string find_checkpoint(const std::string& spec, const config::ExperimentConfig& cfg, int world,
                            CheckpointUse use, std::string* why_none, bool checksums) {
  if (!files::is_dir(spec)) throw UserError(spec + ": no such checkpoint folder");
  if (files::exists(join_path(spec, "manifest.json"))) {
    verify_checkpoint(spec, cfg, world, use, checksums);
    return spec;
  }
  const std::string root = files::is_dir(join_path(spec, "checkpoints")) ? join_path(spec, "checkpoints") : spec;
  for (const auto& dir : checkpoint_folders(root)) {
    try {
      verify_checkpoint(dir, cfg, world, use, checksums);
      return dir;
    } catch (const UserError& e) {
      log::warn(std::string("skipping checkpoint: ") + e.what());
      if (why_none && why_none->empty()) *why_none = e.what();
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
    RngState rng;
    rng.dev = rng_device(device);
    a.read("rng_cpu", rng.cpu);
    if (rng.dev >= 0) a.read("rng_cuda", rng.cuda);
    set_rng_state(rng);
    return state::read_json(a, "trainer");
  } catch (const c10::Error& e) {
    throw UserError(path + ": cannot read the resume state (" + e.what_without_backtrace() + ")");
  } catch (const UserError& e) {
    const std::string what = e.what();
    throw UserError(what.rfind(path, 0) == 0 ? what : path + ": " + what);
  } catch (const std::exception& e) {  // torch's archive reader also throws std::runtime_error
    throw UserError(path + ": cannot read the resume state (" + first_line(e.what()) + ")");
  }
}

}  // namespace efftrain

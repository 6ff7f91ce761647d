// libFuzzer target: the checkpoint readers. Input byte 0 picks the mode:
//   even: the rest is manifest.json of a one-process checkpoint whose files exist;
//         verify_checkpoint must return or throw efftrain::UserError.
//   odd:  the rest is an archive (model.pt or a resume state): load_model into a small module
//         and the resume-state readers must succeed or throw efftrain::UserError.
// Built by scripts/fuzz.sh.
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "efftrain/config/config.h"
#include "efftrain/core/error.h"
#include "efftrain/engine/checkpoint.h"
#include "efftrain/engine/state.h"
#include "fuzz_files.h"

namespace {
std::string g_dir;
efftrain::config::ExperimentConfig g_cfg;
struct Small : torch::nn::Module {
  Small() {
    register_parameter("weight", torch::zeros({2, 3}));
    register_buffer("count", torch::zeros({1}, torch::kLong));
  }
};
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/efftrain-fuzz-ckpt-XXXXXX";
  if (!mkdtemp(tmpl)) std::abort();
  g_dir = tmpl;
  g_cfg.name = "fuzz";
  g_cfg.task.name = "synthetic_cnn";
  for (const char* f : {"model.pt", "rank0.optimizer.pt", "rank0.state.pt"}) efftrain::fuzz::write_file(g_dir + "/" + f, "x");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    efftrain::fuzz::write_file(g_dir + "/manifest.json", rest);
    try {
      (void)efftrain::verify_checkpoint(g_dir, g_cfg, 1, efftrain::CheckpointUse::kResume);
    } catch (const efftrain::UserError&) {
    }
    return 0;
  }
  const std::string path = g_dir + "/archive.pt";
  efftrain::fuzz::write_file(path, rest);
  Small m;
  try {
    efftrain::load_model(m, path);
  } catch (const efftrain::UserError&) {
  }
  torch::serialize::InputArchive a;
  try {
    a.load_from(path);
  } catch (const std::exception&) {  // torch's own reader: c10::Error, std::runtime_error, jit::ErrorReport
    return 0;
  }
  try {  // efftrain's readers of a resume state's entries (read_json, read_into); torch's
         // reading of an entry may still throw c10::Error, which load_resume_state turns into
         // a UserError naming the file
    (void)efftrain::state::read_json(a, "trainer");
    torch::Tensor t = torch::zeros({2, 3});
    efftrain::state::read_into(a, "rng_cpu", t);
  } catch (const efftrain::UserError&) {
  } catch (const std::exception&) {
  }
  return 0;
}

// libFuzzer target: the experiment loader (YAML parsing, `base:` composition, --set overrides,
// validation). Input: the experiment text, optionally followed by a line "--8<--" and one
// override per line. Bad input must end in efftrain::UserError (exit code 2); any other
// exception, crash or sanitizer report is a finding. Built by scripts/fuzz.sh.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "efftrain/config/config.h"
#include "efftrain/core/error.h"
#include "efftrain/core/registry.h"
#include "fuzz_files.h"

namespace {
std::string g_dir;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/efftrain-fuzz-config-XXXXXX";
  if (!mkdtemp(tmpl)) std::abort();
  g_dir = tmpl;
  // The component names the real binary registers (the fuzz build has no LibTorch).
  const char* names[][2] = {{"task", "synthetic_cnn"}, {"task", "cifar10_resnet50"}, {"task", "wikitext2_gpt2"},
                            {"precision", "fp32"},     {"precision", "fp16"},         {"precision", "bf16"},
                            {"accumulation", "none"},  {"accumulation", "fixed"},     {"accumulation", "adaptive"},
                            {"schedule", "constant"},  {"schedule", "warmup_cosine"}, {"optimizer", "adamw"},
                            {"optimizer", "adamw_fused"}, {"grad_sync", "auto"},      {"grad_sync", "none"},
                            {"grad_sync", "ddp"},      {"grad_sync", "zero2"},        {"checkpointing", "none"},
                            {"checkpointing", "sqrt"}, {"checkpointing", "every"},    {"checkpointing", "budget"}};
  for (const auto& n : names) efftrain::catalog::add(n[0], n[1], "");
  // Files that `base:` may name.
  efftrain::fuzz::write_file(g_dir + "/base.yaml", "optim: {lr: 1.0e-3}\ntrain: {batch_size: 8}\n");
  efftrain::fuzz::write_file(g_dir + "/loop_a.yaml", "base: [loop_b.yaml]\n");
  efftrain::fuzz::write_file(g_dir + "/loop_b.yaml", "base: [loop_a.yaml]\n");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  const std::string cut = "\n--8<--\n";
  if (auto at = text.find(cut); at != std::string::npos) {
    std::string rest = text.substr(at + cut.size());
    text.resize(at);
    size_t start = 0;
    while (start <= rest.size() && overrides.size() < 16) {
      const size_t nl = rest.find('\n', start);
      overrides.push_back(rest.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  }
  const std::string path = g_dir + "/exp.yaml";
  efftrain::fuzz::write_file(path, text);
  try {
    const auto cfg = efftrain::config::load(path, overrides);
    (void)efftrain::config::to_yaml(cfg);
  } catch (const efftrain::UserError&) {
    // expected for bad input
  }
  return 0;
}

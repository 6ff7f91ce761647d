// libFuzzer target: the CIFAR-10 batch-file reader. The input is the file: reading it must
// succeed with consistent tensors (N images of 3x32x32, N labels in 0..9) or throw
// efftrain::UserError. Built by scripts/fuzz.sh.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "efftrain/core/error.h"
#include "efftrain/data/cifar10.h"
#include "fuzz_files.h"

namespace {
std::string g_dir;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/efftrain-fuzz-cifar-XXXXXX";
  if (!mkdtemp(tmpl)) std::abort();
  g_dir = tmpl;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = g_dir + "/data_batch_1.bin";
  efftrain::fuzz::write_file(path, std::string(reinterpret_cast<const char*>(data), size));
  try {
    const auto split = efftrain::data::read_cifar10_file(path);
    const int64_t n = static_cast<int64_t>(size) / efftrain::data::kCifarRecord;
    if (split.images.sizes() != torch::IntArrayRef({n, 3, 32, 32}) || split.labels.size(0) != n) std::abort();
    if (split.labels.min().item<int64_t>() < 0 || split.labels.max().item<int64_t>() > 9) std::abort();
    // The first record's first red pixel is byte 1 of the file.
    if (split.images[0][0][0][0].item<uint8_t>() != data[1]) std::abort();
  } catch (const efftrain::UserError&) {
  }
  try {  // a folder with one batch file of six is refused, naming what is missing
    (void)efftrain::data::load_cifar10(g_dir);
    std::abort();
  } catch (const efftrain::UserError&) {
  }
  return 0;
}

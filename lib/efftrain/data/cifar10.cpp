#include "efftrain/data/cifar10.h"

#include <cstring>

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/util.h"

namespace efftrain::data {

const std::vector<double> kCifarMean = {0.4914, 0.4822, 0.4465};
const std::vector<double> kCifarStd = {0.2470, 0.2435, 0.2616};

ImageSplit read_cifar10_file(const std::string& path) {
  if (!files::exists(path)) throw UserError(path + ": CIFAR-10 file not found");
  const std::string bytes = read_file(path, "CIFAR-10 file");
  if (bytes.empty() || bytes.size() % kCifarRecord != 0)
    throw UserError(path + ": size " + std::to_string(bytes.size()) + " bytes is not a whole number of " +
                    std::to_string(kCifarRecord) + "-byte CIFAR-10 records");
  const int64_t n = static_cast<int64_t>(bytes.size()) / kCifarRecord;
  ImageSplit s;
  s.images = torch::empty({n, 3, 32, 32}, torch::kUInt8);
  s.labels = torch::empty({n}, torch::kLong);
  auto* img = s.images.data_ptr<uint8_t>();
  auto* lab = s.labels.data_ptr<int64_t>();
  const auto* src = reinterpret_cast<const uint8_t*>(bytes.data());
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t label = src[i * kCifarRecord];
    if (label > 9)
      throw UserError(path + ": record " + std::to_string(i) + " (byte offset " + std::to_string(i * kCifarRecord) +
                      ") has label " + std::to_string(label) + ", expected 0..9");
    lab[i] = label;
    std::memcpy(img + i * (kCifarRecord - 1), src + i * kCifarRecord + 1, kCifarRecord - 1);
  }
  return s;
}

ImageSet load_cifar10(const std::string& root) {
  if (root.empty())
    throw UserError("task.data.root: expected the folder holding CIFAR-10's data_batch_1.bin..test_batch.bin, found ''"
                    " (or set task.data.synthetic: true)");
  std::string dir = root;
  if (!files::exists(dir + "/data_batch_1.bin") && files::exists(dir + "/cifar-10-batches-bin/data_batch_1.bin"))
    dir += "/cifar-10-batches-bin";
  std::vector<torch::Tensor> imgs, labs;
  for (int b = 1; b <= 5; ++b) {
    const std::string f = dir + "/data_batch_" + std::to_string(b) + ".bin";
    if (!files::exists(f))
      throw UserError(f + ": CIFAR-10 file not found (looked in " + root + " and " + root +
                      "/cifar-10-batches-bin; task.data.root)");
    auto s = read_cifar10_file(f);
    imgs.push_back(s.images);
    labs.push_back(s.labels);
  }
  ImageSet set;
  set.train.images = torch::cat(imgs);
  set.train.labels = torch::cat(labs);
  const std::string test = dir + "/test_batch.bin";
  if (!files::exists(test))
    throw UserError(test + ": CIFAR-10 file not found (task.data.root)");
  set.eval = read_cifar10_file(test);
  set.mean = kCifarMean;
  set.std = kCifarStd;
  set.classes = 10;
  return set;
}

}  // namespace efftrain::data

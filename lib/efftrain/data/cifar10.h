// CIFAR-10 in its canonical binary distribution: data_batch_1..5.bin and test_batch.bin, each
// a sequence of 3073-byte records (1 label byte, then 1024 R, 1024 G, 1024 B bytes, row-major).
#pragma once

#include <string>

#include "efftrain/data/images.h"

namespace efftrain::data {

constexpr int64_t kCifarRecord = 1 + 3 * 32 * 32;

// Reads one batch file. UserError (naming the file) when it cannot be read, its size is not a
// whole number of records, or a label is outside 0..9.
ImageSplit read_cifar10_file(const std::string& path);

// Loads the 50,000 training and 10,000 test images from `root` (or root/cifar-10-batches-bin),
// with the standard per-channel normalization constants.
ImageSet load_cifar10(const std::string& root);

// The CIFAR-10 normalization constants (of pixel/255).
extern const std::vector<double> kCifarMean, kCifarStd;

}  // namespace efftrain::data

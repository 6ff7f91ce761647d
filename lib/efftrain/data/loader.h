// Image batch loaders: where a training batch's uint8 pixels come from and where augmentation
// runs. All three give [B,C,H,W] uint8 images and int64 labels on the training device.
//   host:   worker threads gather, crop and flip on the CPU into pinned memory, a bounded
//           prefetch queue hands batches over in order, copies are non-blocking.
//   device: the whole uint8 dataset lives on the device; each epoch's order is uploaded once;
//           gather, crop and flip run there (no host work per step).
//   fixed:  one random batch on the device, reused every step (measures the model alone).
// Batches depend only on (seed, rank, batch number): the same on every run, whatever the
// thread timing, so seek() can continue a stream exactly.
#pragma once

#include <torch/torch.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "efftrain/data/images.h"
#include "efftrain/data/sampler.h"

namespace efftrain::data {

struct LoaderOptions {
  int64_t batch_size = 32;
  uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
  bool augment = true;
  int64_t pad = 4;  // crop padding
  int64_t workers = 2;
  int64_t prefetch = 4;
  bool pin_memory = true;
};

struct ImageBatch {
  torch::Tensor images;  // uint8 [B,C,H,W] on the device
  torch::Tensor labels;  // int64 [B] on the device
};

class ImageLoader {
 public:
  virtual ~ImageLoader() = default;
  virtual ImageBatch next() = 0;
  // The next next() returns batch number `batch` (0-based over epochs), as if the batches
  // before it had been drawn: the data position of a resumed run.
  virtual void seek(int64_t batch) = 0;
  virtual std::string kind() const = 0;
};

std::unique_ptr<ImageLoader> make_image_loader(const std::string& input_path, const ImageSplit& train,
                                               const LoaderOptions& opts, torch::Device device);

// A host tensor on `device` without stopping the host: on CUDA it crosses from pinned memory,
// asynchronously (a pageable copy may wait for every kernel already queued, an idle gap on the
// GPU and, with several processes, each rank's host restarting at its own moment).
torch::Tensor to_device_async(torch::Tensor host, torch::Device device);

// Crop (zero padding `pad`, offsets in [0, 2*pad]) and horizontal flip of any-dtype [B,C,H,W]
// images, with the randomness given: oy, ox int64 [B], flip bool [B], all on x's device.
torch::Tensor crop_flip(const torch::Tensor& x, int64_t pad, const torch::Tensor& oy, const torch::Tensor& ox,
                        const torch::Tensor& flip);

}  // namespace efftrain::data

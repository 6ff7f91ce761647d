#include "efftrain/data/loader.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>

namespace efftrain::data {

torch::Tensor to_device_async(torch::Tensor host, torch::Device device) {
  if (!device.is_cuda()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

torch::Tensor crop_flip(const torch::Tensor& x, int64_t pad, const torch::Tensor& oy, const torch::Tensor& ox,
                        const torch::Tensor& flip) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  torch::Tensor out = x;
  if (pad > 0) {
    auto opts = torch::TensorOptions().device(x.device()).dtype(torch::kLong);
    auto padded = torch::constant_pad_nd(x, {pad, pad, pad, pad}, 0);
    auto rows = oy.view({B, 1}) + torch::arange(H, opts).view({1, H});
    auto cols = ox.view({B, 1}) + torch::arange(W, opts).view({1, W});
    out = padded.gather(2, rows.view({B, 1, H, 1}).expand({B, C, H, W + 2 * pad}));
    out = out.gather(3, cols.view({B, 1, 1, W}).expand({B, C, H, W}));
  }
  return torch::where(flip.view({B, 1, 1, 1}), out.flip({3}), out);
}

namespace {

uint64_t batch_seed(const LoaderOptions& o, int64_t batch) {
  return (o.seed * 0x9e3779b97f4a7c15ULL) ^ (static_cast<uint64_t>(o.rank) << 48) ^
         static_cast<uint64_t>(batch) * 0xbf58476d1ce4e5b9ULL;
}

// ---------------------------------------------------------------------------------------------
class HostLoader : public ImageLoader {
 public:
  HostLoader(const ImageSplit& train, const LoaderOptions& o, torch::Device device)
      : train_(train), opts_(o), device_(device),
        sampler_(train.labels.size(0), o.batch_size, o.seed, o.rank, o.world_size),
        pin_(o.pin_memory && device.is_cuda()) {
    for (int64_t i = 0; i < o.workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~HostLoader() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  ImageBatch next() override {
    std::pair<torch::Tensor, torch::Tensor> host;
    if (threads_.empty()) {
      auto job = next_job();
      host = make(job.first, job.second);
    } else {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return ready_.count(consumed_) > 0 || error_; });
      if (error_) std::rethrow_exception(error_);
      host = std::move(ready_[consumed_]);
      ready_.erase(consumed_);
      ++consumed_;
      l.unlock();
      cv_.notify_all();
    }
    return {host.first.to(device_, /*non_blocking=*/true), host.second.to(device_, /*non_blocking=*/true)};
  }
  std::string kind() const override { return "host"; }

  void seek(int64_t batch) override {
    std::lock_guard<std::mutex> l(mu_);
    sampler_.seek(batch);
    issued_ = consumed_ = batch;
    ready_.clear();
    ++generation_;  // batches being made for the old position are dropped when they arrive
    cv_.notify_all();
  }

 private:
  // The next batch number and its indices; callers hold mu_ when worker threads exist.
  std::pair<int64_t, std::vector<int64_t>> next_job() {
    return {issued_++, sampler_.next_batch()};
  }

  std::pair<torch::Tensor, torch::Tensor> make(int64_t b, const std::vector<int64_t>& idx_vec) {
    torch::NoGradGuard ng;
    auto idx = torch::tensor(idx_vec, torch::kLong);
    auto images = train_.images.index_select(0, idx);
    auto labels = train_.labels.index_select(0, idx);
    if (opts_.augment) {
      auto gen = at::detail::createCPUGenerator(batch_seed(opts_, b));
      images = random_crop_flip(images, opts_.pad, gen).contiguous();
    }
    if (pin_) {
      images = images.pin_memory();
      labels = labels.pin_memory();
    }
    return {images, labels};
  }

  void work() {
    at::set_num_threads(1);  // the loader's parallelism is its threads
    while (true) {
      std::pair<int64_t, std::vector<int64_t>> job;
      int64_t generation = 0;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || issued_ < consumed_ + opts_.prefetch; });
        if (stop_) return;
        job = next_job();
        generation = generation_;
      }
      try {
        auto batch = make(job.first, job.second);
        std::lock_guard<std::mutex> l(mu_);
        if (generation == generation_) ready_[job.first] = std::move(batch);
      } catch (...) {
        std::lock_guard<std::mutex> l(mu_);
        error_ = std::current_exception();
      }
      cv_.notify_all();
    }
  }

  ImageSplit train_;
  LoaderOptions opts_;
  torch::Device device_;
  EpochSampler sampler_;
  bool pin_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, std::pair<torch::Tensor, torch::Tensor>> ready_;
  int64_t issued_ = 0, consumed_ = 0, generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

// ---------------------------------------------------------------------------------------------
class DeviceLoader : public ImageLoader {
 public:
  DeviceLoader(const ImageSplit& train, const LoaderOptions& o, torch::Device device)
      : opts_(o), device_(device), sampler_(train.labels.size(0), o.batch_size, o.seed, o.rank, o.world_size),
        gen_(device.is_cuda() ? at::cuda::detail::createCUDAGenerator(device.index())
                              : at::detail::createCPUGenerator()) {
    images_ = train.images.to(device);
    labels_ = train.labels.to(device);
  }

  ImageBatch next() override {
    if (!order_.defined() || pos_ + opts_.batch_size > order_.size(0)) {
      ++epoch_;
      order_ = to_device_async(torch::tensor(sampler_.rank_indices(epoch_), torch::kLong), device_);  // once per epoch
      pos_ = 0;
    }
    auto idx = order_.slice(0, pos_, pos_ + opts_.batch_size);
    pos_ += opts_.batch_size;
    auto images = images_.index_select(0, idx);
    if (opts_.augment) {
      {  // the batch's own stream (host-side: seed and a zero offset), as the host loader's
        std::lock_guard<std::mutex> l(gen_.mutex());
        gen_.set_current_seed(batch_seed(opts_, batch_));
      }
      const int64_t B = opts_.batch_size;
      auto lopts = torch::TensorOptions().device(device_).dtype(torch::kLong);
      auto oy = torch::randint(0, 2 * opts_.pad + 1, {B}, gen_, lopts);
      auto ox = torch::randint(0, 2 * opts_.pad + 1, {B}, gen_, lopts);
      auto flip = torch::rand({B}, gen_, torch::TensorOptions().device(device_)) < 0.5;
      images = crop_flip(images, opts_.pad, oy, ox, flip);
    }
    ++batch_;
    return {images, labels_.index_select(0, idx)};
  }
  std::string kind() const override { return "device"; }

  void seek(int64_t batch) override {
    const int64_t per_epoch = sampler_.batches_per_epoch();
    epoch_ = batch / per_epoch;
    order_ = to_device_async(torch::tensor(sampler_.rank_indices(epoch_), torch::kLong), device_);
    pos_ = (batch % per_epoch) * opts_.batch_size;
    batch_ = batch;
  }

 private:
  LoaderOptions opts_;
  torch::Device device_;
  EpochSampler sampler_;
  torch::Generator gen_;
  torch::Tensor images_, labels_, order_;
  int64_t epoch_ = -1, pos_ = 0, batch_ = 0;
};

// ---------------------------------------------------------------------------------------------
class FixedLoader : public ImageLoader {
 public:
  FixedLoader(const ImageSplit& train, const LoaderOptions& o, torch::Device device) {
    auto gen = at::detail::createCPUGenerator(o.seed + 99);
    const auto s = train.images.sizes();
    batch_.images = torch::randint(0, 256, {o.batch_size, s[1], s[2], s[3]}, gen, torch::kLong)
                        .to(torch::kUInt8)
                        .to(device);
    const int64_t classes = train.labels.max().item<int64_t>() + 1;
    batch_.labels = torch::randint(0, classes, {o.batch_size}, gen, torch::kLong).to(device);
  }
  ImageBatch next() override { return batch_; }
  void seek(int64_t) override {}
  std::string kind() const override { return "fixed"; }

 private:
  ImageBatch batch_;
};

}  // namespace

std::unique_ptr<ImageLoader> make_image_loader(const std::string& input_path, const ImageSplit& train,
                                               const LoaderOptions& opts, torch::Device device) {
  if (input_path == "device") return std::make_unique<DeviceLoader>(train, opts, device);
  if (input_path == "fixed") return std::make_unique<FixedLoader>(train, opts, device);
  return std::make_unique<HostLoader>(train, opts, device);
}

}  // namespace efftrain::data

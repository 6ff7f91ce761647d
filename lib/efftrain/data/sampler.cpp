#include "efftrain/data/sampler.h"

#include <stdexcept>
#include <string>

#include "efftrain/core/error.h"

namespace efftrain::data {

namespace {
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
// Unbiased integer in [0, bound) (Lemire's method with rejection).
uint64_t bounded(uint64_t& state, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    const uint64_t r = splitmix64(state);
    if (r >= threshold) return r % bound;
  }
}
}  // namespace

std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  uint64_t state = seed;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(bounded(state, static_cast<uint64_t>(i + 1)));
    std::swap(p[i], p[j]);
  }
  return p;
}

EpochSampler::EpochSampler(int64_t dataset_size, int64_t batch_size, uint64_t seed, int rank,
                           int world_size, bool shuffle)
    : n_(dataset_size), batch_(batch_size), per_rank_(dataset_size / world_size), seed_(seed),
      rank_(rank), world_(world_size), shuffle_(shuffle) {
  if (per_rank_ < batch_)
    throw UserError("the training split has " + std::to_string(n_) + " examples, fewer than one batch of " +
                    std::to_string(batch_) + " per rank on " + std::to_string(world_) + " rank(s)");
}

std::vector<int64_t> EpochSampler::rank_indices(int64_t e) const {
  std::vector<int64_t> all;
  if (shuffle_) {
    all = permutation(n_, seed_ * 0x100000001b3ULL + static_cast<uint64_t>(e) + 1);
  } else {
    all.resize(n_);
    for (int64_t i = 0; i < n_; ++i) all[i] = i;
  }
  std::vector<int64_t> mine;
  mine.reserve(per_rank_);
  for (int64_t i = rank_; i < per_rank_ * world_; i += world_) mine.push_back(all[i]);
  return mine;
}

void EpochSampler::seek(int64_t batches) {
  epoch_ = batches / batches_per_epoch();
  order_ = rank_indices(epoch_);
  pos_ = (batches % batches_per_epoch()) * batch_;
}

std::vector<int64_t> EpochSampler::next_batch() {
  if (epoch_ < 0 || pos_ + batch_ > static_cast<int64_t>(order_.size())) {
    ++epoch_;
    order_ = rank_indices(epoch_);
    pos_ = 0;
  }
  std::vector<int64_t> b(order_.begin() + pos_, order_.begin() + pos_ + batch_);
  pos_ += batch_;
  return b;
}

}  // namespace efftrain::data

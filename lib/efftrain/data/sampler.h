// Epoch order of a dataset for one rank: a permutation drawn from (seed, epoch), identical on
// every machine and run, cut into this rank's share (like torch's DistributedSampler with
// drop_last) and then into batches.
#pragma once

#include <cstdint>
#include <vector>

namespace efftrain::data {

// Uniform permutation of 0..n-1 from a 64-bit seed (SplitMix64 + Fisher-Yates; no
// implementation-defined std distributions, so the order is the same everywhere).
std::vector<int64_t> permutation(int64_t n, uint64_t seed);

class EpochSampler {
 public:
  EpochSampler(int64_t dataset_size, int64_t batch_size, uint64_t seed, int rank = 0,
               int world_size = 1, bool shuffle = true);
  // Indices of the next batch; a new epoch starts (reshuffled) when this one is used up.
  std::vector<int64_t> next_batch();
  // Positions the sampler so that the next batch is batch number `batches` (0-based, counted
  // over epochs): what a resumed run needs to continue mid-epoch.
  void seek(int64_t batches);
  int64_t epoch() const { return epoch_; }
  int64_t batches_per_epoch() const { return per_rank_ / batch_; }
  // This rank's indices for epoch `e`, in order.
  std::vector<int64_t> rank_indices(int64_t e) const;

 private:
  int64_t n_, batch_, per_rank_;
  uint64_t seed_;
  int rank_, world_;
  bool shuffle_;
  int64_t epoch_ = -1;
  int64_t pos_ = 0;
  std::vector<int64_t> order_;
};

}  // namespace efftrain::data

// grad_sync zero2 (ZeRO stage 2): parameters are flattened into buckets and each bucket is
// split evenly across ranks. Backward hooks reduce-scatter each bucket to the shard owners as it
// fills; each rank then holds only its gradient shard and an FP32 master copy of its parameter
// shard, which is what the optimizer updates (so its state exists only for the shard). The
// optimizer sees the shard as runs of elements with one weight-decay setting each (views of the
// master). After the step the updated shards are all-gathered back into the model's parameters.
#include "efftrain/dist/buckets.h"

namespace efftrain::dist {

namespace {

class Zero2 : public BucketedSync {
 public:
  using BucketedSync::BucketedSync;

  ParamSet attach(torch::nn::Module& model) override {
    const int64_t world = comm_->size(), rank = comm_->rank();
    auto index = [this](const Bucket& b) { return static_cast<size_t>(&b - buckets_->buckets().data()); };
    make_buckets(
        model, /*pad=*/world,
        [this, index](Bucket& b) {
          const size_t i = index(b);
          return comm_->reduce_scatter_sum(b.wire.defined() ? wire_shards_[i] : grad_shards_[i], GradBuckets::sent(b));
        },
        [this, index](Bucket& b) { grad_shards_[index(b)].copy_(wire_shards_[index(b)]); });
    ParamSet set;
    torch::NoGradGuard ng;
    const auto& params = buckets_->params();
    for (auto& b : buckets_->buckets()) {
      const auto& p0 = params[b.params[0]];
      const int64_t shard = b.padded / world, lo = rank * shard;
      auto flat = torch::zeros({b.padded}, p0.options().dtype(torch::kFloat));
      for (size_t j = 0; j < b.params.size(); ++j) buckets_->slot(flat, b, j).copy_(params[b.params[j]]);
      masters_.push_back(flat.narrow(0, lo, shard).clone());
      grad_shards_.push_back(torch::zeros({shard}, p0.options()));
      if (wire_) wire_shards_.push_back(torch::zeros({shard}, p0.options().dtype(*wire_)));
      shard_elements_ += shard;
      // Runs of this shard's elements with one decay setting (parameters with >= 2 dims decay).
      for (size_t j = 0; j < b.params.size(); ++j) {
        const int64_t a = std::max(b.offsets[j], lo), e = std::min(b.offsets[j] + params[b.params[j]].numel(), lo + shard);
        if (a >= e) continue;
        const bool decay = params[b.params[j]].dim() >= 2;
        if (!runs_.empty() && runs_.back().bucket == masters_.size() - 1 && runs_.back().decay == decay &&
            runs_.back().start + runs_.back().length == a - lo)
          runs_.back().length += e - a;
        else
          runs_.push_back({masters_.size() - 1, a - lo, e - a, decay});
      }
    }
    for (const auto& r : runs_) {
      set.tensors.push_back(plain_alias(masters_[r.bucket], r.start, {r.length}, {1}));
      set.decay.push_back(r.decay);
    }
    views_ = set.tensors;
    return set;
  }

  void finish() override {
    buckets_->finish();
    buckets_->release_buffers();  // the full-size gradient buckets are not kept (unless static)
    for (size_t i = 0; i < runs_.size(); ++i)
      views_[i].mutable_grad() = plain_alias(grad_shards_[runs_[i].bucket], runs_[i].start, {runs_[i].length}, {1});
    if (!buckets_->is_static())
      for (const auto& p : buckets_->params()) p.mutable_grad().reset();
    ++steps_;
  }

  bool sharded() const override { return true; }

  void after_step() override {
    torch::NoGradGuard ng;
    const auto& params = buckets_->params();
    auto& buckets = buckets_->buckets();
    // Every gather is in flight before the first copy waits; each bucket's parameters are
    // then written by one multi-tensor copy (not one kernel per parameter).
    std::vector<torch::Tensor> full(buckets.size());
    std::vector<Work> works(buckets.size());
    for (size_t i = 0; i < buckets.size(); ++i) {
      full[i] = torch::empty({buckets[i].padded}, masters_[i].options());
      works[i] = comm_->all_gather(full[i], masters_[i]);
    }
    for (size_t i = 0; i < buckets.size(); ++i) {
      auto& b = buckets[i];
      works[i]->wait();
      std::vector<torch::Tensor> dst, src;
      for (size_t j = 0; j < b.params.size(); ++j) {
        dst.push_back(params[b.params[j]]);
        src.push_back(buckets_->slot(full[i], b, j));
      }
      at::_foreach_copy_(dst, src);
    }
  }

  nlohmann::json report() const override {
    const int64_t elem = masters_.empty() ? 4 : masters_[0].element_size();
    nlohmann::json j =
        base_report("zero2", "reduce_scatter per bucket in backward, all_gather of parameters after the step");
    j.update({{"shard_elements", shard_elements_},
              {"optimizer_tensors", runs_.size()},
              {"master_shard_bytes", shard_elements_ * elem},
              {"gradient_shard_bytes", shard_elements_ * elem}});
    return j;
  }

 private:
  std::vector<torch::Tensor> masters_, grad_shards_;
  std::vector<torch::Tensor> wire_shards_;  // the reduce-scatter's output in the wire dtype (comm_dtype)
  struct Run {  // elements [start, start + length) of masters_[bucket], one decay setting
    size_t bucket;
    int64_t start, length;
    bool decay;
  };
  std::vector<Run> runs_;
  std::vector<torch::Tensor> views_;  // what the optimizer updates, one per run
  int64_t shard_elements_ = 0;
};

}  // namespace

EFFTRAIN_REGISTER(GradSync, "zero2",
                  "ZeRO stage 2: bucketed reduce-scatter in backward; gradients, FP32 master weights and optimizer "
                  "state sharded across ranks",
                  [](const BuildContext& ctx) { return make_bucketed_sync<Zero2>(ctx, "zero2"); });

}  // namespace efftrain::dist

// grad_sync ddp: every rank keeps every gradient; buckets are all-reduced (sum of grad/world)
// from backward hooks as they fill, on the micro-batch that ends an optimizer step.
#include "efftrain/dist/buckets.h"

namespace efftrain::dist {

namespace {

class Ddp : public BucketedSync {
 public:
  using BucketedSync::BucketedSync;

  ParamSet attach(torch::nn::Module& model) override {
    make_buckets(
        model, /*pad=*/1, [this](Bucket& b) { return comm_->all_reduce_sum(GradBuckets::sent(b)); },
        [](Bucket& b) { b.flat.copy_(b.wire); });
    return default_param_set(buckets_->params());
  }

  void finish() override {
    buckets_->finish();
    ++steps_;
    if (buckets_->is_static()) return;  // the .grads are bucket slots already
    // The averaged gradient becomes each parameter's .grad, as a view of its bucket (no copy).
    const auto& params = buckets_->params();
    for (auto& b : buckets_->buckets())
      for (size_t j = 0; j < b.params.size(); ++j)
        params[b.params[j]].mutable_grad() = buckets_->alias(b.flat, b, j);
  }

  nlohmann::json report() const override {
    return base_report("ddp", "all_reduce (sum of gradient / world size) per bucket");
  }
};

}  // namespace

EFFTRAIN_REGISTER(GradSync, "ddp", "bucketed all-reduce from backward hooks, overlapped with backward",
                  [](const BuildContext& ctx) { return make_bucketed_sync<Ddp>(ctx, "ddp"); });

}  // namespace efftrain::dist

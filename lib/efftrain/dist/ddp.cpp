// grad_sync ddp: every rank keeps every gradient; buckets are all-reduced (sum of grad/world)
// from backward hooks as they fill, on the micro-batch that ends an optimizer step.
#include "efftrain/core/error.h"
#include "efftrain/dist/buckets.h"
#include "efftrain/engine/context.h"

namespace efftrain::dist {

namespace {

class Ddp : public GradSync {
 public:
  Ddp(std::shared_ptr<Comm> comm, double bucket_bytes) : comm_(std::move(comm)), bucket_bytes_(bucket_bytes) {}

  ParamSet attach(torch::nn::Module& model) override {
    broadcast_model(*comm_, model);
    buckets_ = std::make_unique<GradBuckets>(comm_, model, bucket_bytes_, /*pad=*/1,
                                             [this](Bucket& b) { return comm_->all_reduce_sum(b.flat); });
    return default_param_set(buckets_->params());
  }

  void before_backward(bool last) override { buckets_->arm(last); }

  void finish() override {
    buckets_->finish();
    // The averaged gradient becomes each parameter's .grad, as a view of its bucket (no copy).
    const auto& params = buckets_->params();
    for (auto& b : buckets_->buckets())
      for (size_t j = 0; j < b.params.size(); ++j)
        params[b.params[j]].mutable_grad() = buckets_->alias(b.flat, b, j);
    ++steps_;
  }

  nlohmann::json report() const override {
    nlohmann::json j = {{"name", "ddp"},
                        {"world_size", comm_->size()},
                        {"backend", comm_->backend_name()},
                        {"collective", "all_reduce (sum of gradient / world size) per bucket"},
                        {"optimizer_steps", steps_},
                        {"buckets_launched_during_backward", buckets_->launched_from_hooks()}};
    j.update(buckets_->describe());
    return j;
  }

 private:
  std::shared_ptr<Comm> comm_;
  double bucket_bytes_;
  std::unique_ptr<GradBuckets> buckets_;
  int64_t steps_ = 0;
};

}  // namespace

EFFTRAIN_REGISTER(GradSync, "ddp", "bucketed all-reduce from backward hooks, overlapped with backward",
                  [](const BuildContext& ctx) -> std::unique_ptr<GradSync> {
                    if (!ctx.comm)
                      throw UserError("distributed.grad_sync: ddp needs more than one process (world size 1); "
                                      "use none or auto");
                    return std::make_unique<Ddp>(ctx.comm, ctx.cfg.distributed.bucket_mb * 1024 * 1024);
                  });

}  // namespace efftrain::dist

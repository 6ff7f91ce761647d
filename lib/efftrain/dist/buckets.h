// Gradient buckets for ddp and zero2 (internal to dist/). Parameters are grouped, in reverse
// registration order (roughly the order backward produces their gradients), into buckets of
// about `bucket_bytes` of one dtype. A post hook on each
// parameter's AccumulateGrad node copies its gradient into the bucket's flat buffer on the
// micro-batch that communicates; a full bucket is handed to `launch` in bucket order (the same
// order on every rank), so communication overlaps the rest of backward (distributed.overlap_comm;
// else finish() hands them over after backward). With a wire dtype
// (distributed.comm_dtype) the collective runs on a copy of the bucket in that dtype, made after
// the division by the world size, and `land` puts the result back where the sync keeps it.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "efftrain/core/error.h"
#include "efftrain/dist/comm.h"
#include "efftrain/dist/grad_sync.h"
#include "efftrain/engine/context.h"

namespace efftrain::dist {

struct Bucket {
  std::vector<size_t> params;    // indices into GradBuckets::params()
  std::vector<int64_t> offsets;  // element offset of each parameter in the flat buffer
  int64_t numel = 0;             // elements of the parameters
  int64_t padded = 0;            // buffer length: numel rounded up to a multiple of `pad`
  torch::Tensor flat;            // the gradient buffer of this step
  torch::Tensor wire;            // flat in the wire dtype, what the collective sends (else undefined)
  Work work;
  // This step's progress.
  std::vector<char> copied;
  int64_t remaining = 0;
  bool launched = false;
};

class GradBuckets {
 public:
  // `launch(bucket)` starts the bucket's collective on sent(bucket) (already divided by the
  // world size) and returns its work. Flat buffers are allocated on first use and kept until
  // release_buffers() (zero2 releases them after every step).
  // `wire`: the collective's dtype when it differs from the gradients' (undefined: theirs);
  // `land(bucket)` runs after each wait when the bucket went over the wire in that dtype.
  // `overlap` false: the hooks only fill the buckets; finish() sends them all after backward.
  GradBuckets(std::shared_ptr<Comm> comm, torch::nn::Module& model, double bucket_bytes, int64_t pad,
              std::function<Work(Bucket&)> launch, std::optional<at::ScalarType> wire = std::nullopt,
              std::function<void(Bucket&)> land = nullptr, bool overlap = true);
  // What the collective of bucket b sends: its wire copy, or its flat buffer.
  static torch::Tensor& sent(Bucket& b) { return b.wire.defined() ? b.wire : b.flat; }

  const std::vector<torch::Tensor>& params() const { return params_; }
  std::vector<Bucket>& buckets() { return buckets_; }
  // A view of parameter i's slot in `flat`, with the parameter's own sizes and strides.
  torch::Tensor slot(const torch::Tensor& flat, const Bucket& b, size_t j) const;
  // The same memory as a plain tensor, not an autograd view: usable as a parameter's .grad
  // (optimizers detach_() and reset grads, which views refuse).
  torch::Tensor alias(const torch::Tensor& flat, const Bucket& b, size_t j) const;

  void arm(bool last);
  // Launches what the hooks did not (unused parameters get zeros) and waits for every bucket.
  // With static gradients: launches every bucket, then waits.
  void finish();
  void release_buffers();
  // Static gradients (GradSync::use_static_grads): every flat buffer is allocated and zeroed
  // once, each parameter's .grad becomes its slot, the hooks stay idle and the buffers are kept.
  void use_static();
  void zero_static();
  bool is_static() const { return static_; }
  // The next finish() does nothing: a replayed graph holds this step's collectives and waits.
  void done_in_graph() { done_in_graph_ = true; }
  // GradSync::measure_local_norm / local_sq_norm.
  void measure_local_norm();
  const torch::Tensor& local_sq_norm() const { return local_sq_; }
  int64_t launched_from_hooks() const { return from_hooks_; }
  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  nlohmann::json describe() const;

 private:
  void on_grad(size_t i);
  void launch_in_order();
  void start(Bucket& b);

  std::shared_ptr<Comm> comm_;
  std::vector<torch::Tensor> params_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;  // kept alive: they carry the hooks
  std::vector<std::pair<size_t, size_t>> where_;                      // param -> (bucket, position)
  std::vector<Bucket> buckets_;
  double bucket_bytes_;
  std::function<Work(Bucket&)> launch_;
  std::optional<at::ScalarType> wire_;
  std::function<void(Bucket&)> land_;
  bool overlap_;
  std::mutex mu_;
  bool armed_ = false;
  bool static_ = false;
  bool done_in_graph_ = false;
  torch::Tensor local_sq_;  // defined once measured: the sum of the sent buckets' squared norms
  size_t next_ = 0;
  int64_t from_hooks_ = 0;
};

// Elements [offset, offset + numel of `sizes`) of the 1-D `flat` with the given sizes and strides,
// as a plain tensor sharing its memory, not an autograd view: usable as a .grad (optimizers
// detach_() grads, which views refuse).
torch::Tensor plain_alias(const torch::Tensor& flat, int64_t offset, at::IntArrayRef sizes, at::IntArrayRef strides);

// What ddp and zero2 share: the process group, the gradient buckets, and the common part of
// their report.
class BucketedSync : public GradSync {
 public:
  // `wire`: distributed.comm_dtype when it is not the gradients' own (fp32).
  BucketedSync(std::shared_ptr<Comm> comm, double bucket_bytes, std::optional<at::ScalarType> wire = std::nullopt,
               bool overlap = true)
      : comm_(std::move(comm)), bucket_bytes_(bucket_bytes), wire_(wire), overlap_(overlap) {}
  void before_backward(bool last) override { buckets_->arm(last); }
  void use_static_grads() override { buckets_->use_static(); }
  bool communicates() const override { return true; }
  bool overlaps_backward() const override { return overlap_; }
  void communicated_in_graph() override { buckets_->done_in_graph(); }
  void finish_captured() override { buckets_->finish(); }
  void zero_static_grads() override { buckets_->zero_static(); }
  void measure_local_norm() override { buckets_->measure_local_norm(); }
  torch::Tensor local_sq_norm() const override { return buckets_->local_sq_norm(); }

 protected:
  // Every rank takes rank 0's model; then the buckets (padded to a multiple of `pad`).
  void make_buckets(torch::nn::Module& model, int64_t pad, std::function<Work(Bucket&)> launch,
                    std::function<void(Bucket&)> land = nullptr);
  nlohmann::json base_report(const char* name, const char* collective) const;

  std::shared_ptr<Comm> comm_;
  double bucket_bytes_;
  std::optional<at::ScalarType> wire_;
  bool overlap_;
  std::unique_ptr<GradBuckets> buckets_;
  int64_t steps_ = 0;
};

// The registry factory of a bucketed sync: several processes only.
template <class Sync>
std::unique_ptr<GradSync> make_bucketed_sync(const BuildContext& ctx, const std::string& name) {
  if (!ctx.comm)
    throw UserError("distributed.grad_sync: " + name + " needs more than one process (world size 1); use none or auto");
  const auto& d = ctx.cfg.distributed.comm_dtype;
  std::optional<at::ScalarType> wire;
  if (d == "bf16") wire = at::kBFloat16;
  if (d == "fp16") wire = at::kHalf;
  return std::make_unique<Sync>(ctx.comm, ctx.cfg.distributed.bucket_mb * 1024 * 1024, wire,
                                ctx.cfg.distributed.overlap_comm);
}

// The model's trainable parameters without duplicates (tied weights appear once).
std::vector<torch::Tensor> unique_parameters(torch::nn::Module& model);
// Every rank takes rank 0's parameters and buffers.
void broadcast_model(Comm& comm, torch::nn::Module& model);

}  // namespace efftrain::dist

#include "efftrain/dist/buckets.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <map>
#include <unordered_set>

namespace efftrain::dist {

std::vector<torch::Tensor> unique_parameters(torch::nn::Module& model) {
  std::vector<torch::Tensor> out;
  std::unordered_set<const void*> seen;
  for (const auto& p : model.parameters())
    if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) out.push_back(p);
  return out;
}

void broadcast_model(Comm& comm, torch::nn::Module& model) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> ts;
  std::unordered_set<const void*> seen;
  for (const auto& p : model.parameters())
    if (seen.insert(p.unsafeGetTensorImpl()).second) ts.push_back(p);
  for (const auto& b : model.buffers())
    if (b.defined()) ts.push_back(b);
  comm.broadcast(ts, /*root=*/0);
}

GradBuckets::GradBuckets(std::shared_ptr<Comm> comm, torch::nn::Module& model, double bucket_bytes, int64_t pad,
                         std::function<Work(Bucket&)> launch, std::optional<at::ScalarType> wire,
                         std::function<void(Bucket&)> land, bool overlap)
    : comm_(std::move(comm)),
      params_(unique_parameters(model)),
      bucket_bytes_(bucket_bytes),
      launch_(std::move(launch)),
      wire_(wire),
      land_(std::move(land)),
      overlap_(overlap) {
  where_.resize(params_.size());
  // One open bucket per dtype; parameters in reverse order. (Grouping by anything else, such
  // as weight decay, would make a bucket span the whole network and delay every launch after
  // it to the end of backward: buckets are sent in order.)
  std::map<int, size_t> open;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    TORCH_CHECK(p.is_non_overlapping_and_dense(), "gradient buckets need dense parameters");
    const int key = static_cast<int>(p.scalar_type());
    auto it = open.find(key);
    if (it == open.end() || static_cast<double>(buckets_[it->second].numel * p.element_size()) >= bucket_bytes_) {
      buckets_.emplace_back();
      it = open.insert_or_assign(key, buckets_.size() - 1).first;
    }
    Bucket& b = buckets_[it->second];
    where_[k] = {it->second, b.params.size()};
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
  }
  for (auto& b : buckets_) {
    b.padded = (b.numel + pad - 1) / pad * pad;
    b.copied.assign(b.params.size(), 0);
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[i]);
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_grad(i);
          return outputs;
        }));
    accumulators_.push_back(std::move(acc));
  }
}

torch::Tensor GradBuckets::slot(const torch::Tensor& flat, const Bucket& b, size_t j) const {
  const auto& p = params_[b.params[j]];
  return flat.as_strided(p.sizes(), p.strides(), flat.storage_offset() + b.offsets[j]);
}

torch::Tensor plain_alias(const torch::Tensor& flat, int64_t offset, at::IntArrayRef sizes, at::IntArrayRef strides) {
  torch::NoGradGuard ng;
  auto t = torch::empty({0}, flat.options());
  t.set_(flat.storage(), flat.storage_offset() + offset, sizes, strides);
  return t;
}

torch::Tensor GradBuckets::alias(const torch::Tensor& flat, const Bucket& b, size_t j) const {
  const auto& p = params_[b.params[j]];
  return plain_alias(flat, b.offsets[j], p.sizes(), p.strides());
}

void GradBuckets::arm(bool last) {
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = last;
  if (!last) return;
  next_ = 0;
  if (local_sq_.defined()) local_sq_.zero_();
  for (auto& b : buckets_) {
    std::fill(b.copied.begin(), b.copied.end(), 0);
    b.remaining = static_cast<int64_t>(b.params.size());
    b.launched = false;
    b.work.reset();
  }
}

void GradBuckets::on_grad(size_t i) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_) return;
  const auto [bi, j] = where_[i];
  Bucket& b = buckets_[bi];
  const auto& g = params_[i].grad();
  if (!g.defined()) return;
  TORCH_CHECK(!b.launched, "gradient sync: parameter ", i, " received a gradient after its bucket was sent");
  if (!b.flat.defined()) b.flat = torch::empty({b.padded}, params_[i].options());
  torch::NoGradGuard ng;
  auto s = slot(b.flat, b, j);
  if (!g.is_alias_of(s)) s.copy_(g);  // again, if the gradient grew since: the newest sum counts
  if (b.copied[j]) return;
  b.copied[j] = 1;
  if (--b.remaining == 0 && overlap_) launch_in_order();
}

void GradBuckets::launch_in_order() {
  while (next_ < buckets_.size() && buckets_[next_].remaining == 0) {
    start(buckets_[next_]);
    ++from_hooks_;
    ++next_;
  }
}

void GradBuckets::start(Bucket& b) {
  torch::NoGradGuard ng;
  if (!b.flat.defined()) b.flat = torch::empty({b.padded}, params_[b.params[0]].options());
  for (size_t j = 0; j < b.params.size(); ++j)
    if (!b.copied[j]) slot(b.flat, b, j).zero_();  // a parameter without a gradient this step
  if (b.padded > b.numel) b.flat.narrow(0, b.numel, b.padded - b.numel).zero_();
  if (local_sq_.defined())
    local_sq_.add_(at::linalg_vector_norm(b.flat, 2, std::nullopt, false, at::kDouble).square());
  if (comm_->size() > 1) b.flat.div_(static_cast<double>(comm_->size()));
  if (wire_ && *wire_ != b.flat.scalar_type()) {
    if (!b.wire.defined()) b.wire = torch::empty({b.padded}, b.flat.options().dtype(*wire_));
    b.wire.copy_(b.flat);
  }
  b.work = launch_(b);
  b.launched = true;
}

void GradBuckets::finish() {
  if (done_in_graph_) {  // a replayed graph sent and waited for every bucket
    done_in_graph_ = false;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (static_ && !armed_) {  // after backward: every slot holds its gradient already
      next_ = 0;
      if (local_sq_.defined()) local_sq_.zero_();
      for (auto& b : buckets_) std::fill(b.copied.begin(), b.copied.end(), 1);
    }
    for (; next_ < buckets_.size(); ++next_) start(buckets_[next_]);
    armed_ = false;
  }
  for (auto& b : buckets_) {
    if (b.work) b.work->wait();
    b.work.reset();
    if (b.wire.defined() && land_) land_(b);
  }
}

void GradBuckets::release_buffers() {
  if (static_) return;
  for (auto& b : buckets_) b.flat = b.wire = torch::Tensor();
}

void GradBuckets::use_static() {
  std::lock_guard<std::mutex> lock(mu_);
  torch::NoGradGuard ng;
  armed_ = false;
  static_ = true;
  for (auto& b : buckets_) {
    b.flat = torch::zeros({b.padded}, params_[b.params[0]].options());
    if (wire_ && *wire_ != b.flat.scalar_type()) b.wire = torch::zeros({b.padded}, b.flat.options().dtype(*wire_));
    for (size_t j = 0; j < b.params.size(); ++j) params_[b.params[j]].mutable_grad() = alias(b.flat, b, j);
  }
}

void GradBuckets::measure_local_norm() {
  if (!local_sq_.defined())
    local_sq_ = torch::zeros({}, params_.at(0).options().dtype(torch::kDouble));  // one address: graphs hold it
}

void GradBuckets::zero_static() {
  for (auto& b : buckets_) b.flat.zero_();
}

void BucketedSync::make_buckets(torch::nn::Module& model, int64_t pad, std::function<Work(Bucket&)> launch,
                                std::function<void(Bucket&)> land) {
  broadcast_model(*comm_, model);
  buckets_ = std::make_unique<GradBuckets>(comm_, model, bucket_bytes_, pad, std::move(launch), wire_, std::move(land),
                                           overlap_);
}

nlohmann::json BucketedSync::base_report(const char* name, const char* collective) const {
  nlohmann::json j = {{"name", name},
                      {"world_size", comm_->size()},
                      {"backend", comm_->backend_name()},
                      {"collective", collective},
                      {"comm_dtype", wire_ ? std::string(c10::toString(*wire_)) : "the gradients' own"},
                      {"overlap_comm", overlap_},
                      {"gradient_as_bucket_view", buckets_->is_static()},
                      {"optimizer_steps", steps_},
                      {"buckets_launched_during_backward", buckets_->launched_from_hooks()}};
  j.update(buckets_->describe());
  return j;
}

nlohmann::json GradBuckets::describe() const {
  nlohmann::json sizes = nlohmann::json::array();
  for (const auto& b : buckets_) sizes.push_back(b.numel);
  return {{"buckets", buckets_.size()}, {"bucket_cap_bytes", bucket_bytes_}, {"bucket_elements", sizes}};
}

}  // namespace efftrain::dist

#include "efftrain/memory/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>

#include "efftrain/precision/autocast.h"

namespace efftrain {

namespace {

struct Holder : torch::CustomClassHolder {
  SegmentFn fn;
};

thread_local bool t_recomputing = false;

}  // namespace

bool recomputing() { return t_recomputing; }
RecomputeScope::RecomputeScope() : outer_(t_recomputing) { t_recomputing = true; }
RecomputeScope::~RecomputeScope() { t_recomputing = outer_; }

// While a CUDA graph is being captured the CUDA generator's state cannot be read or set (its
// offsets live on the device); the step graph refuses models with dropout when checkpointing
// is on (engine/step_graph.cpp), so the recompute of a captured segment draws no random numbers.
RngState get_rng_state(c10::DeviceIndex dev) {
  RngState r;
  if (dev >= 0 && c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) dev = -1;
  r.dev = dev;
  auto c = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> l(c.mutex());
    r.cpu = c.get_state();
  }
  if (dev >= 0) {
    auto g = at::cuda::detail::getDefaultCUDAGenerator(dev);
    std::lock_guard<std::mutex> l(g.mutex());
    r.cuda = g.get_state();
  }
  return r;
}

void set_rng_state(const RngState& r) {
  auto c = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> l(c.mutex());
    c.set_state(r.cpu);
  }
  if (r.dev >= 0) {
    auto g = at::cuda::detail::getDefaultCUDAGenerator(r.dev);
    std::lock_guard<std::mutex> l(g.mutex());
    g.set_state(r.cuda);
  }
}

namespace {

struct CheckpointFn : torch::autograd::Function<CheckpointFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               c10::intrusive_ptr<Holder> h) {
    const auto dev = x.is_cuda() ? x.device().index() : c10::DeviceIndex(-1);
    const auto type = x.device().type();
    const RngState r = get_rng_state(dev);
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::intrusive_ptr<torch::CustomClassHolder>(h));
    ctx->saved_data["dev"] = static_cast<int64_t>(r.dev);
    ctx->saved_data["cpu_rng"] = r.cpu;
    if (r.dev >= 0) ctx->saved_data["cuda_rng"] = r.cuda;
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(type);
    ctx->saved_data["autocast_dtype"] = static_cast<int64_t>(at::autocast::get_autocast_dtype(type));
    ctx->save_for_backward({x});
    return h->fn(x);  // grad mode is off here: nothing inside is kept
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto h = c10::static_intrusive_pointer_cast<Holder>(ctx->saved_data["fn"].toCapsule());
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    RngState fwd;
    fwd.dev = static_cast<c10::DeviceIndex>(ctx->saved_data["dev"].toInt());
    fwd.cpu = ctx->saved_data["cpu_rng"].toTensor();
    if (fwd.dev >= 0) fwd.cuda = ctx->saved_data["cuda_rng"].toTensor();
    const RngState now = get_rng_state(fwd.dev);
    set_rng_state(fwd);
    torch::Tensor y;
    {
      at::AutoGradMode grad(true);
      RecomputeScope recompute;
      AutocastGuard ac(x.device().type(), static_cast<at::ScalarType>(ctx->saved_data["autocast_dtype"].toInt()),
                       ctx->saved_data["autocast"].toBool());
      y = h->fn(x);
    }
    set_rng_state(now);
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpoint(SegmentFn fn, const torch::Tensor& x) {
  auto h = c10::make_intrusive<Holder>();
  h->fn = std::move(fn);
  return CheckpointFn::apply(x, h);
}

torch::Tensor run_blocks(int64_t n, const std::vector<std::pair<int64_t, int64_t>>& segments, bool training,
                         const std::function<torch::Tensor(int64_t, const torch::Tensor&)>& block,
                         const std::function<void(int64_t, const torch::Tensor&)>& observer, torch::Tensor x) {
  size_t seg = 0;
  for (int64_t i = 0; i < n;) {
    if (training && seg < segments.size() && segments[seg].first == i) {
      const int64_t first = i, count = segments[seg].second;
      x = checkpoint(
          [block, first, count](const torch::Tensor& in) {  // by value: it runs again in backward
            torch::Tensor h = in;
            for (int64_t j = first; j < first + count; ++j) h = block(j, h);
            return h;
          },
          x);
      i += count;
      ++seg;
    } else {
      x = block(i, x);
      if (observer) observer(i, x);
      ++i;
    }
  }
  return x;
}

}  // namespace efftrain

#include "efftrain/engine/step_graph.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <c10/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>
#include <mutex>

#include "efftrain/core/log.h"

namespace efftrain {

namespace {

// Warm-up iterations before the capture (cuDNN autotuning, cuBLAS workspaces, allocator).
constexpr int kWarmup = 3;

// What the warm-up changes besides the gradients: buffers (BatchNorm statistics, their step
// counters) and the generators (dropout). Taken before it and put back after.
struct ModelState {
  std::vector<torch::Tensor> buffers, saved;
  torch::Tensor cpu_rng, cuda_rng;
  c10::DeviceIndex dev;

  ModelState(torch::nn::Module& m, torch::Device device) : dev(device.index()) {
    torch::NoGradGuard ng;
    for (const auto& b : m.buffers())
      if (b.defined()) {
        buffers.push_back(b);
        saved.push_back(b.clone());
      }
    auto c = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> l(c.mutex());
      cpu_rng = c.get_state();
    }
    auto g = at::cuda::detail::getDefaultCUDAGenerator(dev);
    std::lock_guard<std::mutex> l(g.mutex());
    cuda_rng = g.get_state();
  }

  void restore() {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
    auto c = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> l(c.mutex());
      c.set_state(cpu_rng);
    }
    auto g = at::cuda::detail::getDefaultCUDAGenerator(dev);
    std::lock_guard<std::mutex> l(g.mutex());
    g.set_state(cuda_rng);
  }
};

// `to` waits for the work queued on `from` so far.
void join(const c10::cuda::CUDAStream& from, const c10::cuda::CUDAStream& to) {
  c10::cuda::CUDAEvent e;
  e.record(from);
  e.block(to);
}

}  // namespace

struct StepGraph::Impl {
  Components& parts;
  torch::Device device;
  bool capture;
  torch::Tensor inv_k;  // 1/k on the device, read by the graph
  int64_t last_k = 0;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  Batch in;            // the static inputs the graph reads
  torch::Tensor loss;  // the static output
  std::string failure;  // why the capture failed (eager from then on)
  int64_t replays = 0, eager_micro_steps = 0;
  double capture_s = 0;

  Impl(Components& p, torch::Device d, bool c) : parts(p), device(d), capture(c) {}

  torch::Tensor forward_backward(const Batch& b) {
    torch::Tensor l;
    {
      auto scope = parts.precision->forward_scope();
      l = parts.task->loss(b);
    }
    parts.precision->scale_loss(l * inv_k).backward();
    return l.detach().to(torch::kFloat);
  }

  bool fits(const Batch& b) const {
    // Strides may differ (a loader's views): copy_ writes the batch in the static layout.
    return b.input.sizes() == in.input.sizes() && b.input.scalar_type() == in.input.scalar_type() &&
           b.target.sizes() == in.target.sizes() &&
           b.target.scalar_type() == in.target.scalar_type();
  }

  // Warm-up, then the capture of forward + backward on a side stream. On failure the reason
  // is kept and every micro-step runs eagerly.
  void capture_graph(const Batch& b) {
    const auto t0 = std::chrono::steady_clock::now();
    in = b;
    in.input = torch::empty_like(b.input);
    in.input.copy_(b.input);
    in.target = torch::empty_like(b.target);
    in.target.copy_(b.target);
    ModelState state(parts.task->model(), device);
    const auto main = c10::cuda::getCurrentCUDAStream(device.index());
    const auto side = main == c10::cuda::getDefaultCUDAStream(device.index())
                          ? c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())
                          : main;
    join(main, side);
    {
      c10::cuda::CUDAStreamGuard guard(side);
      for (int i = 0; i < kWarmup; ++i) forward_backward(in);
    }
    join(side, main);
    state.restore();
    parts.grad_sync->zero_static_grads();
    join(main, side);
    graph = std::make_unique<at::cuda::CUDAGraph>();
    const bool cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);  // no cast outlives the capture
    {
      c10::cuda::CUDAStreamGuard guard(side);
      bool begun = false;
      try {
        graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
        begun = true;
        loss = forward_backward(in);
        begun = false;
        graph->capture_end();
      } catch (const std::exception& e) {
        failure = e.what();
        if (begun) try {
            graph->capture_end();
          } catch (const std::exception&) {
          }
        graph.reset();
      }
    }
    at::autocast::set_autocast_cache_enabled(cache);
    join(side, main);
    if (!failure.empty()) {
      failure = failure.substr(0, failure.find('\n'));
      log::warn("train.cuda_graph: the capture failed, eager micro-steps from here: " + failure);
      state.restore();
      parts.grad_sync->zero_static_grads();
    }
    capture_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (failure.empty())
      log::info(strf("train.cuda_graph: forward + backward captured (%d warm-up iterations, %.2fs)", kWarmup,
                     capture_s));
  }
};

std::shared_ptr<void> StepGraph::run_on_own_stream(torch::Device device) {
  if (!device.is_cuda()) return nullptr;
  return std::make_shared<c10::cuda::CUDAStreamGuard>(
      c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index()));
}

std::string StepGraph::unsupported(const config::ExperimentConfig& cfg, Components& parts, torch::Device device) {
  if (!device.is_cuda()) return "the run is on " + device.str() + "; CUDA graphs need a CUDA device";
  if (cfg.checkpointing.policy != "none" && cfg.task.model.dropout > 0)
    return "activation checkpointing with dropout restores the CUDA RNG state in backward, which a captured graph "
           "cannot (set task.model.dropout: 0 or checkpointing.policy: none)";
  return "";
}

StepGraph::StepGraph(Components& parts, torch::Device device, bool capture)
    : impl_(std::make_unique<Impl>(parts, device, capture)) {
  impl_->inv_k = torch::ones({}, torch::TensorOptions().device(device).dtype(torch::kFloat));
  parts.grad_sync->use_static_grads();
}

StepGraph::~StepGraph() = default;

void StepGraph::zero_grad() { impl_->parts.grad_sync->zero_static_grads(); }

torch::Tensor StepGraph::micro_step(const Batch& b, int64_t k) {
  Impl& m = *impl_;
  if (k != m.last_k) {
    m.inv_k.fill_(1.0 / static_cast<double>(k));
    m.last_k = k;
  }
  if (m.capture && m.failure.empty() && !m.graph) m.capture_graph(b);
  if (!m.graph || !m.fits(b)) {
    ++m.eager_micro_steps;
    return m.forward_backward(b);
  }
  m.in.input.copy_(b.input);
  m.in.target.copy_(b.target);
  m.graph->replay();
  ++m.replays;
  return m.loss;
}

nlohmann::json StepGraph::report() const {
  const Impl& m = *impl_;
  nlohmann::json j = {{"enabled", m.graph != nullptr},
                      {"captured", m.capture ? "forward + backward of one micro-batch" : "nothing (static gradients, eager)"},
                      {"replays", m.replays},
                      {"eager_micro_steps", m.eager_micro_steps},
                      {"warmup_iterations", m.capture ? kWarmup : 0},
                      {"capture_s", m.capture_s},
                      {"gradient_sync", "after backward, every bucket at once (no overlap with backward)"}};
  if (m.in.input.defined()) j["static_input_shape"] = m.in.input.sizes().vec();
  j["reason"] = m.failure.empty() ? nlohmann::json(nullptr) : nlohmann::json("capture failed: " + m.failure);
  return j;
}

}  // namespace efftrain

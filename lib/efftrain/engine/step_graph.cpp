#include "efftrain/engine/step_graph.h"

#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>

#include "efftrain/core/log.h"
#include "efftrain/core/util.h"
#include "efftrain/memory/checkpoint.h"

namespace efftrain {

namespace {

// Warm-up iterations before the capture (cuDNN autotuning, cuBLAS workspaces, allocator).
constexpr int kWarmup = 3;

// What the warm-up changes besides the gradients: buffers (BatchNorm statistics, their step
// counters) and the generators (dropout). Taken before it and put back after.
struct ModelState {
  std::vector<torch::Tensor> buffers, saved;
  RngState rng;

  ModelState(torch::nn::Module& m, torch::Device device) : rng(get_rng_state(device.index())) {
    torch::NoGradGuard ng;
    for (const auto& b : m.buffers())
      if (b.defined()) {
        buffers.push_back(b);
        saved.push_back(b.clone());
      }
  }

  void restore() {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
    set_rng_state(rng);
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
  bool comm_in_graph;   // the last micro-batch's graph holds the collectives
  bool hooks_eager;     // uncaptured static gradients: the hooks send buckets as backward fills them
  torch::Tensor inv_k;  // 1/k on the device, read by the graph
  int64_t last_k = 0;
  // [0]: a micro-batch without communication (every one, without comm_in_graph); [1]: the last.
  std::unique_ptr<at::cuda::CUDAGraph> graph[2];
  torch::Tensor loss[2];  // their static outputs
  Batch in;               // the static inputs both read
  std::string failure;  // why the capture failed (eager from then on)
  int64_t replays = 0, eager_micro_steps = 0;
  double capture_s = 0;

  Impl(Components& p, torch::Device d, bool c)
      : parts(p),
        device(d),
        capture(c),
        comm_in_graph(c && p.grad_sync->overlaps_backward()),
        hooks_eager(!c && p.grad_sync->overlaps_backward()) {}

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

  // Graph `slot`: before the first, warm-up iterations; then the capture on a non-default
  // stream. On failure the reason is kept and every micro-step runs eagerly. Capturing reads
  // and changes nothing (no kernel runs), so a capture in the middle of a step is harmless.
  void capture_graph(const Batch& b, int slot) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto main = c10::cuda::getCurrentCUDAStream(device.index());
    const auto side = main == c10::cuda::getDefaultCUDAStream(device.index())
                          ? c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())
                          : main;
    ModelState state(parts.task->model(), device);
    if (!in.input.defined()) {
      in = b;
      in.input = torch::empty_like(b.input);
      in.input.copy_(b.input);
      in.target = torch::empty_like(b.target);
      in.target.copy_(b.target);
      const std::vector<torch::Tensor> grads = saved_grads();
      join(main, side);
      {
        c10::cuda::CUDAStreamGuard guard(side);
        for (int i = 0; i < kWarmup; ++i) forward_backward(in);
      }
      join(side, main);
      state.restore();
      restore_grads(grads);
    }
    join(main, side);
    const bool comm = comm_in_graph && slot == 1;
    auto& g = graph[slot];
    g = std::make_unique<at::cuda::CUDAGraph>();
    const bool cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);  // no cast outlives the capture
    {
      c10::cuda::CUDAStreamGuard guard(side);
      bool begun = false;
      try {
        g->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
        begun = true;
        if (comm) parts.grad_sync->before_backward(/*last=*/true);
        loss[slot] = forward_backward(in);
        if (comm) parts.grad_sync->finish_captured();
        begun = false;
        g->capture_end();
      } catch (const std::exception& e) {
        failure = e.what();
        if (begun) try {
            g->capture_end();
          } catch (const std::exception&) {
          }
        if (comm) parts.grad_sync->before_backward(/*last=*/false);
        graph[0].reset();
        graph[1].reset();
      }
    }
    at::autocast::set_autocast_cache_enabled(cache);
    join(side, main);
    capture_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!failure.empty()) {
      failure = first_line(failure);
      log::warn("train.cuda_graph: the capture failed, eager micro-steps from here: " + failure);
      state.restore();
    } else {
      log::info(strf("train.cuda_graph: forward + backward%s captured (%.2fs so far)",
                     comm ? " + gradient communication" : "", capture_s));
    }
  }

  // The gradients of the micro-batches before this one in the step (the warm-up adds to them), in
  // host memory: a copy on the device would count in the peak (the capture's activations are
  // live while it is held), once per capture.
  std::vector<torch::Tensor> saved_grads() {
    std::vector<torch::Tensor> out;
    torch::NoGradGuard ng;
    for (const auto& p : parts.task->model().parameters())
      out.push_back(p.grad().defined() ? p.grad().to(torch::kCPU) : torch::Tensor());
    return out;
  }
  void restore_grads(const std::vector<torch::Tensor>& saved) {
    torch::NoGradGuard ng;
    size_t i = 0;
    for (auto& p : parts.task->model().parameters()) {
      const auto& s = saved[i++];
      if (s.defined()) p.mutable_grad().copy_(s);
    }
  }
};

std::shared_ptr<void> StepGraph::run_on_own_stream(torch::Device device) {
  if (!device.is_cuda()) return nullptr;
  return std::make_shared<c10::cuda::CUDAStreamGuard>(
      c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index()));
}

std::string StepGraph::unsupported(const config::ExperimentConfig& cfg, torch::Device device) {
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

void StepGraph::recapture() {
  if (!impl_->capture || !impl_->failure.empty()) return;
  impl_->graph[0].reset();
  impl_->graph[1].reset();
  impl_->in = Batch{};  // the next capture warms up again
}

torch::Tensor StepGraph::micro_step(const Batch& b, int64_t k, bool last) {
  Impl& m = *impl_;
  if (k != m.last_k) {
    m.inv_k.fill_(1.0 / static_cast<double>(k));
    m.last_k = k;
  }
  const int slot = m.comm_in_graph && last ? 1 : 0;
  if (m.capture && m.failure.empty() && !m.graph[slot] && (!m.in.input.defined() || m.fits(b)))
    m.capture_graph(b, slot);
  if (!m.graph[slot] || !m.fits(b)) {
    ++m.eager_micro_steps;
    if (m.hooks_eager) m.parts.grad_sync->before_backward(last);
    return m.forward_backward(b);
  }
  m.in.input.copy_(b.input);
  m.in.target.copy_(b.target);
  m.graph[slot]->replay();
  if (slot == 1) m.parts.grad_sync->communicated_in_graph();
  ++m.replays;
  return m.loss[slot];
}

nlohmann::json StepGraph::report() const {
  const Impl& m = *impl_;
  const bool enabled = m.capture && m.failure.empty() && (m.graph[0] || m.graph[1]);
  nlohmann::json j = {{"enabled", enabled},
                      {"captured", !m.capture ? "nothing (static gradients, eager)"
                                   : m.comm_in_graph ? "forward + backward of one micro-batch; the last one's with the "
                                                       "gradient communication (overlapped with backward)"
                                                     : "forward + backward of one micro-batch"},
                      {"replays", m.replays},
                      {"eager_micro_steps", m.eager_micro_steps},
                      {"warmup_iterations", m.capture ? kWarmup : 0},
                      {"capture_s", m.capture_s},
                      {"gradient_sync", !m.parts.grad_sync->communicates() ? "none"
                                        : m.comm_in_graph ? "in the graph, from the backward hooks as buckets fill"
                                        : m.hooks_eager ? "from the backward hooks as buckets fill"
                                                        : "after backward, every bucket at once"}};
  if (m.in.input.defined()) j["static_input_shape"] = m.in.input.sizes().vec();
  j["reason"] = !m.failure.empty() ? nlohmann::json("capture failed: " + m.failure)
                : !m.capture      ? nlohmann::json("train.cuda_graph is off (static gradients, eager steps)")
                                  : nlohmann::json(nullptr);
  return j;
}

}  // namespace efftrain

// efftrain-bench: micro-benchmarks that a training run cannot isolate.
//   efftrain-bench optimizer [--model gpt2|resnet50] [--device cuda|cpu] [--iters N]
// prints one JSON object: median optimizer step time of adamw and adamw_fused on the model's
// real parameter set (random gradients), and the per-step cost of the adaptive-k estimator.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "efftrain/batching/accumulation.h"
#include "efftrain/config/config.h"
#include "efftrain/engine/context.h"
#include "efftrain/metrics/device.h"
#include "efftrain/models/gpt2.h"
#include "efftrain/models/models.h"
#include "efftrain/optim/optimizer.h"

using namespace efftrain;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double time_ms(torch::Device dev, int iters, F f) {
  for (int i = 0; i < 3; ++i) f();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    metrics::synchronize(dev);
    const auto t0 = std::chrono::steady_clock::now();
    f();
    metrics::synchronize(dev);
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(t);
}
}  // namespace

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "optimizer", model = "gpt2", device = "cuda";
  int iters = 30;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model = v;
    else if (k == "--device") device = v;
    else if (k == "--iters") iters = std::stoi(v);
    else {
      std::cerr << "efftrain-bench: error: unknown option " << k << "\n";
      return 2;
    }
  }
  if (what != "optimizer") {
    std::cerr << "efftrain-bench: error: unknown benchmark " << what << " (expected optimizer)\n";
    return 2;
  }
  const torch::Device dev = metrics::resolve_device(device, 0);
  std::shared_ptr<torch::nn::Module> m;
  if (model == "gpt2") m = std::make_shared<models::GptImpl>(models::GptConfig{});
  else if (model == "resnet50") m = std::make_shared<models::ResNetImpl>(3, 64, std::vector<int64_t>{3, 4, 6, 3}, 10, false);
  else {
    std::cerr << "efftrain-bench: error: --model expects gpt2 or resnet50, found " << model << "\n";
    return 2;
  }
  m->to(dev);
  auto params = m->parameters();
  int64_t n = 0;
  for (auto& p : params) {
    p.mutable_grad() = torch::randn_like(p) * 1e-3;
    n += p.numel();
  }
  config::ExperimentConfig cfg;
  BuildContext ctx{cfg, dev};
  nlohmann::json out = {{"benchmark", "optimizer step"}, {"model", model}, {"parameters", n},
                        {"tensors", params.size()}, {"device_name", metrics::describe(dev).name}, {"iters", iters}};
  torch::Tensor no_inf = torch::zeros({}, torch::TensorOptions().device(dev));
  for (const std::string name : {"adamw", "adamw_fused"}) {
    auto opt = OptimizerRegistry::create(name, ctx);
    opt->attach(default_param_set(params));
    out[name + "_step_ms"] = time_ms(dev, iters, [&] { opt->step(1e-4, name == "adamw" ? torch::Tensor() : no_inf); });
  }
  out["fused_speedup"] = out["adamw_step_ms"].get<double>() / out["adamw_fused_step_ms"].get<double>();
  // Adaptive k: what it adds to a step with k = 2 (two gradient-norm passes and the EMA update).
  cfg.accumulation.mode = "adaptive";
  cfg.accumulation.k = 2;
  cfg.train.batch_size = 32;
  auto acc = AccumulationRegistry::create("adaptive", ctx);
  int64_t step = 1;
  out["adaptive_overhead_ms"] = time_ms(dev, iters, [&] {
    acc->after_backward(0, 2, params, {});
    acc->after_backward(1, 2, params, {});
    acc->after_step(step++, {});
  });
  std::cout << out.dump(1) << std::endl;
  return 0;
}

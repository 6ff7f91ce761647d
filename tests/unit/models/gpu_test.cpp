// GPU-only checks (ctest label "gpu"; CI has no GPU and skips them).
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "efftrain/kernels/bn_relu.h"
#include "efftrain/kernels/conv.h"
#include "efftrain/metrics/device.h"
#include "efftrain/models/models.h"
#include "efftrain/precision/autocast.h"
#include "helpers.h"
#include "model_files.h"

using namespace efftrain;

TEST_CASE("channels_last makes cuDNN run NHWC convolutions", "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto run = [](bool channels_last) {
    torch::manual_seed(0);
    auto m = std::make_shared<models::ResNetImpl>(3, 16, std::vector<int64_t>{1, 1}, 10, false);
    m->to(torch::kCUDA);
    auto x = torch::randn({8, 3, 32, 32}, torch::kCUDA);
    if (channels_last) {
      torch::NoGradGuard ng;
      for (auto& p : m->parameters())
        if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
      x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    auto h = m->stem(x);  // a cuDNN convolution: its output layout is the kernel's layout
    return std::make_pair(h.is_contiguous(torch::MemoryFormat::ChannelsLast) && !h.is_contiguous(),
                          m->forward(x).cpu());
  };
  auto [nhwc_off, y_off] = run(false);
  auto [nhwc_on, y_on] = run(true);
  CHECK_FALSE(nhwc_off);
  CHECK(nhwc_on);
  CHECK(torch::allclose(y_off, y_on, 1e-3, 1e-3));  // same function, different kernels
}

namespace {
// Two training forwards and backwards (under fp16 autocast, or fp32 with `half` false) of a small
// NHWC ResNet (seed 3, width 8, blocks {2, 2}): the last loss, every gradient, every buffer, and
// what ran its BatchNorms and routed its convolutions' gradients, how many BatchNorm + ReLU outputs
// were left to be remade (`recompute`: task.model.recompute_bn_relu), and the allocator's peak over
// the two (the model and its input allocated before).
struct TwoMicroSteps {
  torch::Tensor loss;
  std::vector<torch::Tensor> grads, buffers;
  std::string bn_kernel, conv_grads;
  int64_t remade = -1, peak_bytes = 0;
};
TwoMicroSteps two_micro_steps(std::vector<std::pair<int64_t, int64_t>> segments, kernels::BnKernels bn,
                              bool half = true, bool conv_grads_in_place = false, bool recompute = false) {
  torch::manual_seed(3);
  auto m = std::make_shared<models::ResNetImpl>(3, 8, std::vector<int64_t>{2, 2}, 10, false);
  m->to(torch::kCUDA);
  {
    torch::NoGradGuard ng;
    for (auto& p : m->parameters())
      if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
  }
  m->train();
  m->set_checkpoint_segments(std::move(segments));
  m->set_bn_kernels(bn);
  m->set_conv_grads_in_place(conv_grads_in_place);
  m->set_recompute_bn_relu(recompute);
  auto x = torch::randn({16, 3, 16, 16}, torch::kCUDA).contiguous(torch::MemoryFormat::ChannelsLast);
  auto y = torch::randint(0, 10, {16}, torch::TensorOptions(torch::kLong).device(torch::kCUDA));
  TwoMicroSteps o;
  const torch::Device dev(torch::kCUDA, 0);
  metrics::reset_peak_memory(dev);
  for (int micro = 0; micro < 2; ++micro) {  // two forwards: the counters and statistics move twice
    torch::Tensor loss;
    {
      std::optional<AutocastGuard> ac;
      if (half) ac.emplace(torch::kCUDA, torch::kHalf);
      loss = torch::nn::functional::cross_entropy(m->forward(x * (1 + micro)), y);
    }
    loss.backward();
    o.loss = loss.detach().cpu();
  }
  o.peak_bytes = metrics::peak_memory(dev).allocated;
  o.remade = m->bn_relu_remade();
  for (auto& p : m->parameters()) o.grads.push_back(p.grad().cpu());
  for (auto& b : m->buffers()) o.buffers.push_back(b.cpu());
  o.bn_kernel = m->bn_kernel();
  o.conv_grads = m->conv_grads();
  return o;
}

// a's gradients against ref's: the largest of ||a_i - ref_i|| / ||ref_i|| over the tensors i, and
// the same over all of them together.
std::pair<double, double> grad_error(const TwoMicroSteps& a, const TwoMicroSteps& ref) {
  REQUIRE(a.grads.size() == ref.grads.size());
  double worst = 0, diff2 = 0, ref2 = 0;
  for (size_t i = 0; i < a.grads.size(); ++i) {
    const auto g = a.grads[i].to(torch::kDouble), r = ref.grads[i].to(torch::kDouble);
    const double d = (g - r).norm().item<double>(), n = r.norm().item<double>();
    worst = std::max(worst, d / std::max(n, 1e-30));
    diff2 += d * d;
    ref2 += n * n;
  }
  return {worst, std::sqrt(diff2 / ref2)};
}

constexpr auto kAten = kernels::BnKernels::aten, kCudnn = kernels::BnKernels::cudnn,
               kEfftrain = kernels::BnKernels::efftrain;

// b's gradients against a's within cuDNN's reordered sums, and the buffers equal.
void check_same_training(const TwoMicroSteps& a, const TwoMicroSteps& b) {
  REQUIRE(a.grads.size() == b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    INFO("gradient " << i);
    CHECK(torch::allclose(a.grads[i], b.grads[i], 1e-2, 1e-3));
  }
  REQUIRE(a.buffers.size() == b.buffers.size());
  for (size_t i = 0; i < a.buffers.size(); ++i) {
    INFO("buffer " << i);
    CHECK(torch::equal(a.buffers[i], b.buffers[i]));
  }
}

// b's gradients as close to the fp32 model's (two_micro_steps in fp32) as a's are, within 2x; the
// loss and the buffers (BatchNorm statistics) within relative `rtol` of a's.
void check_as_close_to_fp32(const TwoMicroSteps& a, const char* a_name, const TwoMicroSteps& b, const char* b_name,
                            double rtol) {
  const auto fp32 = two_micro_steps({}, kAten, /*half=*/false);
  const auto [a_worst, a_all] = grad_error(a, fp32);
  const auto [b_worst, b_all] = grad_error(b, fp32);
  WARN("gradients against fp32, worst tensor / all: " << a_name << " " << a_worst << " / " << a_all << ", "
                                                       << b_name << " " << b_worst << " / " << b_all);
  CHECK(torch::allclose(a.loss, b.loss, rtol, 0));
  CHECK(b_all <= 2 * a_all + 1e-3);
  CHECK(b_worst <= 2 * a_worst + 1e-3);
  REQUIRE(a.buffers.size() == b.buffers.size());
  for (size_t i = 0; i < a.buffers.size(); ++i) {
    INFO("buffer " << i);
    CHECK(torch::allclose(a.buffers[i].to(torch::kDouble), b.buffers[i].to(torch::kDouble), rtol, 1e-5));
  }
}

// ckpt (the same run with checkpointed segments) against plain: the same loss (the forwards run
// the same kernels), every gradient within 1e-3 relative (backward may sum in another order), and
// check_same_training (the statistics moved by the two forwards alone, bit for bit).
void check_checkpointed_as_plain(const TwoMicroSteps& plain, const TwoMicroSteps& ckpt, const char* what) {
  const auto [worst, all] = grad_error(ckpt, plain);
  WARN("checkpointed " << what << " gradients against the plain ones, worst tensor / all: " << worst << " / " << all);
  CHECK(torch::equal(plain.loss, ckpt.loss));
  CHECK(worst <= 1e-3);
  check_same_training(plain, ckpt);
}
}  // namespace

TEST_CASE("gpu: a checkpointed ResNet under fp16 autocast (cuDNN BatchNorm, NHWC) gives the plain one's loss, "
          "gradients and BatchNorm statistics",
          "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto plain = two_micro_steps({}, kAten), ckpt = two_micro_steps({{0, 2}, {2, 2}}, kAten);
  CHECK(torch::equal(plain.loss, ckpt.loss));  // the forwards are the same kernels
  check_same_training(plain, ckpt);            // statistics updated by the forwards only, twice
  CHECK(plain.bn_kernel == "aten");
}

TEST_CASE("gpu: cuDNN's fused BatchNorm + (add +) ReLU trains a ResNet as the separate ops do, plain and "
          "checkpointed",
          "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto ops = two_micro_steps({}, kAten), fused = two_micro_steps({}, kCudnn);
  REQUIRE(fused.bn_kernel == "cudnn_fused");
  // The fused kernel rounds relu(bn(x) + z) to fp16 once, the separate ops after the BatchNorm and
  // again after the add, so the two fp16 runs differ by rounding, which each layer's ReLU mask and
  // the convolutions' weight-gradient sums amplify. The measure is the fp32 model: the fused
  // gradients are to be as close to its gradients as the separate ops' are (within 2x).
  check_as_close_to_fp32(ops, "separate ops", fused, "fused", 2e-3);
  // Checkpointed, the recompute runs the fused kernels with batch statistics only (cuDNN's
  // backward may reorder sums).
  check_checkpointed_as_plain(fused, two_micro_steps({{0, 2}, {2, 2}}, kCudnn), "cuDNN fused");
}

TEST_CASE("gpu: the efftrain BatchNorm kernels train a ResNet as cuDNN's fused ones do, plain and checkpointed",
          "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto cudnn = two_micro_steps({}, kCudnn), ours = two_micro_steps({}, kEfftrain);
  REQUIRE(ours.bn_kernel == "efftrain_fused");
  // Both round relu(bn(x) + z) once; the statistics and gradients are summed in other orders, so
  // the measure is the fp32 model, as for cuDNN's against the separate ops above.
  check_as_close_to_fp32(cudnn, "cuDNN's fused kernels", ours, "efftrain's", 2e-3);
  // Checkpointed: the recompute runs the same kernels with batch statistics only (they sum in a
  // fixed order; cuDNN's convolutions' backward may not).
  check_checkpointed_as_plain(ours, two_micro_steps({{0, 2}, {2, 2}}, kEfftrain), "efftrain fused");
}

TEST_CASE("gpu: conv_grads_in_place (one weight cast, gradients added in place, 1x1 backward as products) trains "
          "a ResNet as autograd's convolutions do, plain and checkpointed",
          "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto ref = two_micro_steps({}, kCudnn), ours = two_micro_steps({}, kCudnn, true, true);
  CHECK(ref.conv_grads == "autograd");
  REQUIRE(ours.conv_grads == "in_place");
  // The same cuDNN forward kernels on the same fp16 weights; the gradients are the same products
  // summed in other orders (the 1x1 convolutions' by cuBLAS, the shortcut's sum inside one of
  // them), so the measure is the fp32 model, as for the fused BatchNorm above.
  check_as_close_to_fp32(ref, "autograd's convolutions", ours, "in place", 1e-3);
  // Checkpointed: the segments' forwards run without gradients (ATen's convolutions, the same
  // kernels), their recomputes through the routed ones.
  check_checkpointed_as_plain(ours, two_micro_steps({{0, 2}, {2, 2}}, kCudnn, true, true), "in-place convolution");
}

TEST_CASE("gpu: recompute_bn_relu remakes the BatchNorm + ReLU outputs bit for bit: the same training, a lower "
          "peak, plain and checkpointed",
          "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto& ctx = at::globalContext();
  const bool was = ctx.deterministicCuDNN();
  ctx.setDeterministicCuDNN(true);  // the same convolution kernels in both runs
  const auto keep = two_micro_steps({}, kEfftrain, true, true), remake = two_micro_steps({}, kEfftrain, true, true, true);
  CHECK(keep.remade == 0);
  REQUIRE(remake.remade == 9);  // the stem's output, and conv2's and conv3's inputs in each of the 4 bottlenecks
  // The remade outputs are the forward's bits and the convolutions get them as before: the same
  // loss, gradients and statistics exactly.
  CHECK(torch::equal(keep.loss, remake.loss));
  REQUIRE(keep.grads.size() == remake.grads.size());
  for (size_t i = 0; i < keep.grads.size(); ++i) {
    INFO("gradient " << i);
    CHECK(torch::equal(keep.grads[i], remake.grads[i]));
  }
  check_same_training(keep, remake);
  // The outputs are not held from forward to backward (one at a time is remade there).
  WARN("peak over two micro-steps: kept " << keep.peak_bytes << " B, remade " << remake.peak_bytes << " B");
  CHECK(remake.peak_bytes < keep.peak_bytes);
  // Checkpointed: the segments' forwards keep nothing; their recomputes keep the sources.
  const auto ckpt = two_micro_steps({{0, 2}, {2, 2}}, kEfftrain, true, true, true);
  CHECK(ckpt.remade == 0);  // every block is in a segment: its forward ran without gradients
  check_checkpointed_as_plain(remake, ckpt, "recompute_bn_relu");
  ctx.setDeterministicCuDNN(was);
}

TEST_CASE("gpu: kernels::bn (cuDNN's BatchNorm alone, bnOps BN) computes BatchNorm in bf16 NHWC", "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(4);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const auto x0 = (torch::randn({16, 64, 8, 8}, f32) * 2 + 0.5)
                      .to(torch::kBFloat16)
                      .contiguous(torch::MemoryFormat::ChannelsLast);
  const auto w0 = torch::rand({64}, f32) + 0.5, b0 = torch::randn({64}, f32), r = torch::randn({16, 64, 8, 8}, f32);
  REQUIRE(efftrain::kernels::bn_relu_fused(x0, {}));
  // kind 0: kernels::bn; 1: ATen's batch_norm on the same bf16 input; 2: fp64 (the exact values,
  // from the same bf16 input and the same bf16-rounded output gradient); 3: kernels::bn with the
  // weight's and bias's .grad there before backward (cuDNN adds into them); 4: as 3 without running
  // statistics (a checkpointed segment's recompute: autograd then counts fewer inputs)
  const auto prior_w = torch::randn({64}, f32), prior_b = torch::randn({64}, f32);
  auto run = [&](int kind) {
    const auto dt = kind == 2 ? torch::kDouble : torch::kFloat;
    auto x = (kind == 2 ? x0.to(torch::kDouble) : x0.clone()).requires_grad_(true);
    // fresh leaves each run (to(kFloat) of an fp32 tensor would be the tensor itself)
    auto w = w0.to(dt).clone().requires_grad_(true), b = b0.to(dt).clone().requires_grad_(true);
    if (kind >= 3) {
      w.mutable_grad() = prior_w.clone();
      b.mutable_grad() = prior_b.clone();
    }
    auto rm = torch::zeros({64}, f32.dtype(dt)), rv = torch::ones({64}, f32.dtype(dt));
    const auto stats = [&](const torch::Tensor& t) { return kind == 4 ? torch::Tensor() : t; };
    auto y = kind == 1 || kind == 2 ? torch::nn::functional::detail::batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5)
                                    : efftrain::kernels::bn(x, w, b, stats(rm), stats(rv), 0.1, 1e-5);
    auto dy = r.to(torch::kBFloat16).to(y.scalar_type());
    y.backward(dy);
    return std::vector<torch::Tensor>{y.detach(), x.grad(), w.grad(), b.grad(), rm, rv};
  };
  const auto ours = run(0), aten = run(1), exact = run(2);
  CHECK(ours[0].dtype() == torch::kBFloat16);
  CHECK(ours[0].is_contiguous(torch::MemoryFormat::ChannelsLast));
  const char* names[] = {"y", "dx", "dweight", "dbias", "running_mean", "running_var"};
  for (int i = 0; i < 6; ++i) {
    INFO(names[i]);
    const double e_ours = efftrain::test::relative_error(ours[i], exact[i]);
    const double e_aten = efftrain::test::relative_error(aten[i], exact[i]);
    WARN(names[i] << ": relative error against fp64, cuDNN " << e_ours << ", ATen " << e_aten);
    // Within bf16's rounding (2^-8) of the exact values: cuDNN's weight and bias gradients were
    // 4.1e-3 from ATen's on an H200 (twelfth session, call 5), too far for a 1e-3 comparison of
    // the two; the WARN lines say which of them is the closer.
    CHECK(e_ours < 1e-2);
    CHECK(e_aten < 1e-2);
  }
  // Into existing gradients: the prior plus the same sums (cuDNN's betaParamDiff 1).
  for (int kind : {3, 4}) {
    INFO("kind " << kind);
    const auto added = run(kind);
    CHECK(torch::allclose(added[2], prior_w + ours[2], 1e-5, 1e-6));
    CHECK(torch::allclose(added[3], prior_b + ours[3], 1e-5, 1e-6));
  }
}

TEST_CASE("gpu: kernels::conv2d under bf16 autocast gives at::conv2d's output and gradients, added into .grad",
          "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  torch::manual_seed(5);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const auto x0 = torch::randn({8, 32, 16, 16}, f32).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto w0 = (torch::randn({64, 32, 3, 3}, f32) * 0.1).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto dy = torch::randn({8, 64, 8, 8}, f32).to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
  // Two forwards and backwards (the second adds into the .grad the first left), by at::conv2d or
  // by kernels::conv2d: {output, x.grad, w.grad}.
  auto run = [&](bool ours) {
    auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    torch::Tensor y;
    for (int i = 0; i < 2; ++i) {
      {
        AutocastGuard ac(torch::kCUDA, torch::kBFloat16);
        y = ours ? kernels::conv2d(x, w, 2, 1) : at::conv2d(x, w, {}, {2, 2}, {1, 1});
      }
      y.backward(dy);
    }
    return std::vector<torch::Tensor>{y.detach(), x.grad(), w.grad()};
  };
  const auto ref = run(false), ours = run(true);
  CHECK(ours[0].scalar_type() == torch::kBFloat16);
  CHECK(ours[2].scalar_type() == torch::kFloat);
  // The same cuDNN kernels on the same bf16 operands; the weight gradient cast to fp32 and added
  // in one kernel instead of a cast and an add: the same values.
  for (int i = 0; i < 3; ++i) {
    INFO("tensor " << i);
    CHECK(torch::allclose(ours[i], ref[i], 1e-5, 1e-6));
  }
}

TEST_CASE("train.memory_snapshot_steps saves the allocator's history with C++ stacks and names it in the report, "
          "recompute_bn_relu reports the outputs it remakes",
          "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  const std::string out = "/tmp/efftrain-gpu-memory-snapshot";
  auto r = efftrain::test::run_efftrain(
      "run experiments/smoke/cifar10_resnet_tiny.yaml --device cuda --set precision.mode=bf16 "
      "--set task.model.channels_last=true --set task.model.fused_bn_relu=true --set task.model.bn_kernels=efftrain "
      "--set task.model.conv_grads_in_place=true --set task.model.recompute_bn_relu=true "
      "--set train.memory_snapshot_steps=2 --set train.max_steps=3 --out " + out + " --overwrite");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(efftrain::test::read_text(out + "/report.json"));
  CHECK(j["memory"]["snapshot"]["steps"] == 2);
  CHECK(j["memory"]["snapshot"]["file"] == out + "/memory_snapshot.rank0.pickle");
  const auto pickled = efftrain::test::read_text(out + "/memory_snapshot.rank0.pickle");
  REQUIRE(pickled.size() > 1000);
  CHECK(static_cast<unsigned char>(pickled[0]) == 0x80);  // a pickle's PROTO opcode
  for (const char* k : {"device_traces", "segments", "alloc", "free_completed"})
    CHECK(pickled.find(k) != std::string::npos);
  CHECK(pickled.find("efftrain::") != std::string::npos);  // C++ frames, symbolized
  CHECK(j["model"]["recompute_bn_relu"] == true);
  CHECK(j["model"]["bn_relu_remade"].get<int64_t>() > 0);
}

TEST_CASE("fp16 with loss scaling trains a tiny ResNet on the GPU and reports its scaler", "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto r = efftrain::test::run_efftrain(
      "run experiments/smoke/cifar10_resnet_tiny.yaml --device cuda --set precision.mode=fp16 "
      "--set optim.name=adamw_fused --set optim.grad_clip=1.0 --out /tmp/efftrain-gpu-fp16 --overwrite");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(efftrain::test::read_text("/tmp/efftrain-gpu-fp16/report.json"));
  CHECK(j["optimizations"]["precision"]["mode"] == "fp16");
  CHECK(j["optimizations"]["precision"]["final_scale"].get<double>() >= 1.0);
  CHECK(j["optimizations"]["precision"]["scale_history"].size() >= 1);
  CHECK(j["quality"]["final"].get<double>() > 0.3);
}

TEST_CASE("an fp16 run whose gradients always overflow stops as diverged at the minimum scale", "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  // lr 1e30 blows the weights up: every gradient overflows and the scale hits its floor.
  auto r = efftrain::test::run_efftrain(
      "run experiments/smoke/cifar10_resnet_tiny.yaml --device cuda --set precision.mode=fp16 "
      "--set optim.lr=1e30 --set precision.initial_scale_power=2 --set precision.hysteresis=1 "
      "--set precision.max_overflows_at_min_scale=3 --set output.log_every=5 --set train.max_steps=200 "
      "--out /tmp/efftrain-gpu-fp16-div --overwrite");
  CHECK(r.exit_code == 3);
  const auto j = nlohmann::json::parse(efftrain::test::read_text("/tmp/efftrain-gpu-fp16-div/report.json"));
  CHECK(j["status"] == "diverged");
  CHECK(j["result"]["steps"].get<int64_t>() < 200);
}

TEST_CASE("budget checkpointing measures the blocks on the GPU and meets a budget", "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto run = [](const std::string& budget, const std::string& out) {
    auto r = efftrain::test::run_efftrain(
        "run experiments/smoke/cifar10_resnet_tiny.yaml --device cuda --set train.max_steps=3 "
        "--set checkpointing.policy=budget --set checkpointing.budget_bytes=" + budget + " --out " + out + " --overwrite");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(efftrain::test::read_text(out + "/report.json"))["optimizations"]["checkpointing"];
  };
  const auto roomy = run("100000000000", "/tmp/efftrain-gpu-budget-a");
  CHECK(roomy["segments"].empty());
  CHECK(roomy["budget_met"] == true);
  CHECK(roomy["measured_block_activation_bytes"].size() == 3);
  const int64_t total = roomy["measured_activation_bytes"];
  CHECK(total > 0);
  const auto tight = run(std::to_string(total * 3 / 4), "/tmp/efftrain-gpu-budget-b");
  CHECK_FALSE(tight["segments"].empty());
  CHECK(tight["estimated_activation_bytes"].get<int64_t>() < total);
}

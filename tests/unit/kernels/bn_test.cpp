// kernels::bn_add_relu / kernels::bn with BnKernels::efftrain (kernels/bn.cu): BatchNorm (+ add)
// (+ ReLU) in fp16/bf16 NHWC against the same function in fp64 on the same rounded inputs, with
// and without running statistics, into existing gradients; where the kernels do not apply,
// another path runs and the report's name says which.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <torch/torch.h>

#include "efftrain/kernels/bn_relu.h"
#include "model_files.h"

using namespace efftrain;
using efftrain::test::relative_error;

namespace {
enum class Mode { bn, relu, add_relu };

struct Result {
  std::vector<torch::Tensor> t;  // y, dx, dz (add only), dweight, dbias, running mean, running var
};

// One forward and backward of `mode` on x0 (and z0), rounded inputs shared by every precision:
// exact = fp64 (ATen's ops on the same values); else the efftrain kernels, `prior` added to
// the parameters' .grad beforehand where defined, running statistics updated where `stats`.
Result run(Mode mode, const torch::Tensor& x0, const torch::Tensor& z0, const torch::Tensor& w0, const torch::Tensor& b0,
           const torch::Tensor& dy0, bool exact, bool stats = true, const torch::Tensor& prior = {}) {
  const auto dt = exact ? torch::kDouble : torch::kFloat;
  const auto C = x0.size(1);
  auto x = (exact ? x0.to(torch::kDouble) : x0.clone()).requires_grad_(true);
  auto z = mode == Mode::add_relu ? (exact ? z0.to(torch::kDouble) : z0.clone()).requires_grad_(true) : torch::Tensor();
  auto w = w0.to(dt).clone().requires_grad_(true), b = b0.to(dt).clone().requires_grad_(true);
  if (prior.defined()) {
    w.mutable_grad() = prior.clone();
    b.mutable_grad() = prior.clone() * 2;
  }
  auto rm = torch::full({C}, 0.25, w0.options().dtype(dt)), rv = torch::full({C}, 2.0, w0.options().dtype(dt));
  torch::Tensor y;
  if (exact) {
    y = torch::nn::functional::detail::batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5);
    if (mode == Mode::add_relu) y = y + z;
    if (mode != Mode::bn) y = torch::relu(y);
  } else {
    const auto r = stats ? rm : torch::Tensor(), v = stats ? rv : torch::Tensor();
    y = mode == Mode::bn ? kernels::bn(x, w, b, r, v, 0.1, 1e-5, kernels::BnKernels::efftrain)
                         : kernels::bn_add_relu(x, z, w, b, r, v, 0.1, 1e-5, kernels::BnKernels::efftrain);
  }
  y.backward(dy0.to(y.scalar_type()));
  Result o;
  o.t = {y.detach(), x.grad(), z.defined() ? z.grad() : torch::zeros({1}, w0.options().dtype(dt)), w.grad(), b.grad(),
         rm, rv};
  return o;
}
}  // namespace

TEST_CASE("gpu: the efftrain BatchNorm kernels give BatchNorm (+ add) (+ ReLU) within fp16/bf16 rounding", "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  const auto dtype = GENERATE(torch::kBFloat16, torch::kHalf);
  // channels: 8 (one thread per row), 64 (ResNet-50's widest rows), 2048 (a block per row); 75
  // rows per image batch is no multiple of any block's rows; the mean far from 0 checks the sums'
  // shift (x - x[0]).
  const auto shape = GENERATE(std::vector<int64_t>{3, 8, 5, 5}, std::vector<int64_t>{16, 64, 8, 8},
                              std::vector<int64_t>{4, 2048, 2, 3});
  const auto mode = GENERATE(Mode::bn, Mode::relu, Mode::add_relu);
  const int64_t C = shape[1];
  INFO("dtype " << dtype << ", shape " << c10::IntArrayRef(shape) << ", mode " << static_cast<int>(mode));
  torch::manual_seed(5);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const auto nhwc = [&](const torch::Tensor& t) { return t.to(dtype).contiguous(torch::MemoryFormat::ChannelsLast); };
  const auto x0 = nhwc(torch::randn(shape, f32) * 3 + 20), z0 = nhwc(torch::randn(shape, f32));
  const auto w0 = torch::rand({C}, f32) + 0.5, b0 = torch::randn({C}, f32) * 0.5;
  const auto dy0 = nhwc(torch::randn(shape, f32));
  REQUIRE(kernels::bn_kernel_name(kernels::BnKernels::efftrain, x0, mode == Mode::add_relu ? z0 : torch::Tensor()) ==
          "efftrain_fused");
  const auto ours = run(mode, x0, z0, w0, b0, dy0, false), exact = run(mode, x0, z0, w0, b0, dy0, true);
  CHECK(ours.t[0].scalar_type() == dtype);
  CHECK(ours.t[0].is_contiguous(torch::MemoryFormat::ChannelsLast));
  const char* names[] = {"y", "dx", "dz", "dweight", "dbias", "running_mean", "running_var"};
  for (int i = 0; i < 7; ++i) {
    if (i == 2 && mode != Mode::add_relu) continue;
    INFO(names[i]);
    const double e = relative_error(ours.t[i], exact.t[i]);
    // fp16/bf16 outputs: their rounding (2^-8 for bf16) and the ReLU masks of values within it of 0;
    // fp32 statistics and parameter gradients summed over the rows.
    CHECK(e < (i >= 3 ? 1e-3 : dtype == torch::kBFloat16 ? 1e-2 : 2e-3));
  }
  // Without running statistics (a checkpointed recompute): the same outputs and gradients, bit for
  // bit; into existing gradients: the prior plus the same sums.
  const auto prior = torch::randn({C}, f32);
  const auto bare = run(mode, x0, z0, w0, b0, dy0, false, /*stats=*/false, prior);
  CHECK(torch::equal(bare.t[0], ours.t[0]));
  CHECK(torch::equal(bare.t[1], ours.t[1]));
  CHECK(torch::allclose(bare.t[3], prior + ours.t[3], 1e-5, 1e-6));
  CHECK(torch::allclose(bare.t[4], prior * 2 + ours.t[4], 1e-5, 1e-6));
  CHECK(torch::equal(bare.t[5], torch::full({C}, 0.25, f32)));
}

TEST_CASE("BnKernels::efftrain off its terms (the CPU, channels no power of two, NCHW) names another path") {
  const auto x = torch::randn({2, 8, 4, 4});
  CHECK(kernels::bn_kernel_name(kernels::BnKernels::efftrain, x, {}) == "aten");  // the CPU
  CHECK(kernels::bn_kernel_name(kernels::BnKernels::aten, x, {}) == "aten");
  if (!torch::cuda::is_available()) return;
  const auto cl = [](const torch::Tensor& t) { return t.contiguous(torch::MemoryFormat::ChannelsLast); };
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  CHECK(kernels::bn_kernel_name(kernels::BnKernels::efftrain, cl(torch::randn({2, 12, 4, 4}, o)), {}) !=
        "efftrain_fused");  // 12 channels: no power of two
  CHECK(kernels::bn_kernel_name(kernels::BnKernels::efftrain, cl(torch::randn({2, 16, 4, 4}, o)), {}) ==
        "efftrain_fused");
  CHECK(kernels::bn_kernel_name(kernels::BnKernels::efftrain, torch::randn({2, 16, 4, 4}, o), {}) !=
        "efftrain_fused");  // NCHW
}

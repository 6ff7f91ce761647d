// kernels::ParamCasts: one refresh casts every tensor; a copy is handed out only while its source
// is unchanged and the ParamCasts alive.
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/kernels/param_casts.h"

using namespace efftrain;

TEST_CASE("ParamCasts holds no tensor off CUDA: nothing to hand out") {
  auto w = torch::randn({4, 8});
  kernels::ParamCasts casts({w});
  casts.refresh(torch::kBFloat16);
  CHECK_FALSE(kernels::ParamCasts::current(w, torch::kBFloat16).defined());
}

TEST_CASE("gpu: ParamCasts casts every tensor in one refresh and hands the copies out while they are current",
          "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  torch::manual_seed(0);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  // sizes across the kernel's 65,536-element chunks, one not a multiple of 4, one tiny
  auto a = torch::randn({300, 700}, f32), b = torch::randn({1001}, f32), c = torch::randn({3}, f32);
  auto other = torch::randn({16}, f32);
  // a channels_last convolution weight: its copy keeps the layout (the kernel copies memory in order)
  auto conv = torch::randn({64, 32, 3, 3}, f32).contiguous(torch::MemoryFormat::ChannelsLast);
  {
    kernels::ParamCasts casts({conv});
    casts.refresh(torch::kBFloat16);
    const auto copy = kernels::ParamCasts::current(conv, torch::kBFloat16);
    REQUIRE(copy.defined());
    CHECK(copy.strides() == conv.strides());
    CHECK(torch::equal(copy, conv.to(torch::kBFloat16)));
  }
  for (auto dt : {torch::kBFloat16, torch::kHalf}) {
    INFO("dtype " << dt);
    auto casts = std::make_unique<kernels::ParamCasts>(std::vector<torch::Tensor>{a, b, c});
    CHECK_FALSE(kernels::ParamCasts::current(a, dt).defined());  // no refresh yet
    casts->refresh(dt);
    for (const auto& t : {a, b, c}) {
      const auto copy = kernels::ParamCasts::current(t, dt);
      REQUIRE(copy.defined());
      CHECK(copy.sizes() == t.sizes());
      CHECK(torch::equal(copy, t.to(dt)));  // round to nearest, as ATen's cast
    }
    CHECK_FALSE(kernels::ParamCasts::current(a, dt == torch::kHalf ? torch::kBFloat16 : torch::kHalf).defined());
    CHECK_FALSE(kernels::ParamCasts::current(other, dt).defined());
    const auto* slot = kernels::ParamCasts::current(a, dt).data_ptr();
    a.add_(1.0);  // changed in place: its copy is stale
    CHECK_FALSE(kernels::ParamCasts::current(a, dt).defined());
    CHECK(kernels::ParamCasts::current(b, dt).defined());
    casts->refresh(dt);  // the same buffers again
    CHECK(kernels::ParamCasts::current(a, dt).data_ptr() == slot);
    CHECK(torch::equal(kernels::ParamCasts::current(a, dt), a.to(dt)));
    casts->invalidate();
    CHECK_FALSE(kernels::ParamCasts::current(b, dt).defined());
    casts->refresh(dt);
    CHECK(kernels::ParamCasts::current(b, dt).defined());
    casts.reset();
    CHECK_FALSE(kernels::ParamCasts::current(a, dt).defined());
  }
}

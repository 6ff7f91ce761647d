// kernels::residual_layer_norm: the fused kernels against ATen's ops with the same dropout mask
// (GPU), and the ATen path off CUDA.
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/kernels/residual_norm.h"
#include "model_files.h"

using namespace efftrain;
using efftrain::test::relative_error;

namespace {


struct Result {
  torch::Tensor s, y, ds_in, dh, dw, db;
};

struct Inputs {
  torch::Tensor s_in, h, w, b, ds_out, dy;  // ds_out undefined: s is not used further
};

Inputs inputs(int64_t rows, int64_t width, torch::Dtype dtype, bool with_ds_out, torch::Device dev) {
  auto f32 = torch::TensorOptions().device(dev).dtype(torch::kFloat);
  Inputs in;
  in.s_in = torch::randn({rows, width}, f32) * 3;
  // |h| >= 0.5: a kept element always moves the stream, so the tests can read the mask off s
  in.h = (torch::randn({rows, width}, f32).sign() * (torch::rand({rows, width}, f32) + 0.5)).to(dtype);
  in.w = torch::rand({width}, f32) * 2 - 0.5;
  in.b = torch::randn({width}, f32);
  if (with_ds_out) in.ds_out = torch::randn({rows, width}, f32);
  in.dy = torch::randn({rows, width}, f32).to(dtype);
  return in;
}

std::vector<torch::Tensor> leaves(const Inputs& in) {
  return {in.s_in.clone().requires_grad_(true), in.h.clone().requires_grad_(true), in.w.clone().requires_grad_(true),
          in.b.clone().requires_grad_(true)};
}

Result backward(const std::vector<torch::Tensor>& l, const torch::Tensor& s, const torch::Tensor& y, const Inputs& in) {
  if (in.ds_out.defined())
    torch::autograd::backward({s, y}, {in.ds_out, in.dy.to(y.scalar_type())});
  else
    torch::autograd::backward({y}, {in.dy.to(y.scalar_type())});
  return {s.detach(), y.detach(), l[0].grad(), l[1].grad(), l[2].grad(), l[3].grad()};
}

// ATen's ops with a given keep mask (undefined: no dropout), as the unfused model runs them:
// the dropout product in fp32 stored in h's dtype, the add in fp32, LayerNorm in fp32.
Result reference(const Inputs& in, const torch::Tensor& keep_mask, double scale) {
  auto l = leaves(in);
  auto d = keep_mask.defined() ? (l[1].to(torch::kFloat) * (keep_mask.to(torch::kFloat) * scale)).to(in.h.scalar_type())
                               : l[1];
  auto s = l[0] + d;
  auto y = torch::layer_norm(s, {s.size(-1)}, l[2], l[3], 1e-5);
  return backward(l, s, y, in);
}

Result fused(const Inputs& in, double p) {
  auto l = leaves(in);
  REQUIRE(std::string(kernels::residual_norm_path(l[0], l[1], l[2], l[3])) == "fused_kernel");
  auto [s, y] = kernels::residual_layer_norm(l[0], l[1], l[2], l[3], p, /*training=*/true, 1e-5);
  CHECK(y.scalar_type() == in.h.scalar_type());
  return backward(l, s, y, in);
}

}  // namespace

TEST_CASE("residual_layer_norm off CUDA runs ATen's ops") {
  torch::manual_seed(0);
  auto in = inputs(5, 24, torch::kFloat, true, torch::kCPU);
  auto l = leaves(in);
  CHECK(std::string(kernels::residual_norm_path(l[0], l[1], l[2], l[3])) == "aten");
  torch::manual_seed(3);
  auto [s, y] = kernels::residual_layer_norm(l[0], l[1], l[2], l[3], 0.25, true, 1e-5);
  torch::manual_seed(3);
  auto s_ref = in.s_in + torch::dropout(in.h, 0.25, true);
  CHECK(torch::equal(s.detach(), s_ref));
  CHECK(torch::equal(y.detach(), torch::layer_norm(s_ref, {24}, in.w, in.b, 1e-5)));
}

TEST_CASE("gpu: the fused residual LayerNorm kernels give ATen's results with the same dropout mask", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  struct Shape {
    int64_t rows, width;
  };
  // 257 rows: a partial block; 5000 rows of 128: several rows per backward warp (2,048 warps)
  for (auto shape : {Shape{257, 768}, Shape{5000, 128}, Shape{64, 2048}})
    for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16})
      for (double p : {0.0, 0.1})
        for (bool with_ds_out : {true, false}) {
          INFO("rows " << shape.rows << " width " << shape.width << " dtype " << dtype << " p " << p << " ds_out "
                       << with_ds_out);
          torch::manual_seed(shape.width + static_cast<int>(dtype));
          const auto in = inputs(shape.rows, shape.width, dtype, with_ds_out, torch::kCUDA);
          const auto f = fused(in, p);
          // the mask the kernel drew: a dropped element leaves the stream exactly as it was
          const auto kept = f.s != in.s_in;
          const auto r = p > 0 ? reference(in, kept, 1.0 / (1.0 - p)) : reference(in, {}, 1.0);
          if (p > 0) {
            const double dropped = 1.0 - kept.to(torch::kDouble).mean().item<double>();
            CHECK(std::abs(dropped - p) < 0.01);
            // backward draws the same mask: a dropped element's h gets no gradient, a kept one does
            CHECK(torch::equal(f.dh != 0, kept));
          }
          // fp32 sums in other orders; half types: the same fp32 math on the same inputs, the
          // outputs rounded once to that dtype (2^-8 bf16, 2^-11 fp16)
          const double out_tol = dtype == torch::kFloat ? 1e-5 : dtype == torch::kHalf ? 1e-3 : 8e-3;
          CHECK(relative_error(f.s, r.s) < 1e-6);
          CHECK(relative_error(f.y, r.y) < out_tol);
          CHECK(relative_error(f.ds_in, r.ds_in) < 1e-5);
          CHECK(relative_error(f.dh, r.dh) < out_tol);
          CHECK(relative_error(f.dw, r.dw) < 1e-4);
          CHECK(relative_error(f.db, r.db) < 1e-4);
          CHECK(f.dh.scalar_type() == dtype);
        }
}

TEST_CASE("gpu: the fused residual LayerNorm adds its parameters' gradients into an existing .grad", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  torch::manual_seed(4);
  const auto in = inputs(257, 768, torch::kBFloat16, true, torch::kCUDA);
  const auto fresh = fused(in, 0.0);
  auto l = leaves(in);
  const auto gw = torch::randn_like(in.w), gb = torch::randn_like(in.b);
  l[2].mutable_grad() = gw.clone();
  l[3].mutable_grad() = gb.clone();
  const auto* slot = l[2].grad().data_ptr();
  auto [s, y] = kernels::residual_layer_norm(l[0], l[1], l[2], l[3], 0.0, /*training=*/true, 1e-5);
  const auto r = backward(l, s, y, in);
  CHECK(r.dw.data_ptr() == slot);
  CHECK(relative_error(r.dw, gw + fresh.dw) < 1e-6);
  CHECK(relative_error(r.db, gb + fresh.db) < 1e-6);
  CHECK(torch::equal(r.dh, fresh.dh));
}

TEST_CASE("gpu: the fused residual LayerNorm draws its dropout from the CUDA generator", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  torch::manual_seed(0);
  const auto in = inputs(64, 768, torch::kBFloat16, true, torch::kCUDA);
  auto mask = [&] {
    auto [s, y] = kernels::residual_layer_norm(in.s_in, in.h, in.w, in.b, 0.5, true, 1e-5);
    return s != in.s_in;
  };
  torch::cuda::manual_seed(7);
  const auto a = mask(), b = mask();
  torch::cuda::manual_seed(7);
  const auto c = mask();
  CHECK(torch::equal(a, c));      // the same generator state draws the same mask
  CHECK_FALSE(torch::equal(a, b));  // the next call draws anew
  // evaluation (training off) draws nothing and drops nothing
  auto [s, y] = kernels::residual_layer_norm(in.s_in, in.h, in.w, in.b, 0.5, false, 1e-5);
  CHECK(torch::equal(s, in.s_in + in.h.to(torch::kFloat)));
}

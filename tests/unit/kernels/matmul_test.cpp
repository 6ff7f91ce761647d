// kernels::mm_out / addmm_ / mm / linear_mm (task.model.matmul): ATen's ops off CUDA in every mode;
// on the GPU, cuBLASLt's products in every operand layout GPT uses against fp64, the fallback where
// cuBLASLt cannot take the operands, what tuning records, and no tuning inside a graph capture.
#include <catch2/catch_test_macros.hpp>

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <functional>

#include "efftrain/kernels/matmul.h"
#include "model_files.h"

using namespace efftrain;
using efftrain::test::relative_error;
using kernels::Matmul;

TEST_CASE("task.model.matmul: names parse and print back; anything else is refused") {
  for (const auto m : {Matmul::aten, Matmul::cublaslt, Matmul::tuned})
    CHECK(kernels::parse_matmul(kernels::matmul_name(m)) == m);
  CHECK(std::string(kernels::matmul_name(Matmul::tuned)) == "tuned");
  CHECK_FALSE(kernels::parse_matmul("cublas").has_value());
  CHECK_FALSE(kernels::parse_matmul("").has_value());
}

TEST_CASE("kernels::mm_out / addmm_ / mm / linear_mm on the CPU: ATen's ops, bit for bit, in every mode") {
  torch::manual_seed(0);
  auto x = torch::randn({2, 6, 8}), w = torch::randn({5, 8}), b = torch::randn({5}), g = torch::randn({12, 5});
  const auto x2 = x.reshape({12, 8});
  const auto before = kernels::matmul_tuning().shapes;
  for (const auto how : {Matmul::aten, Matmul::cublaslt, Matmul::tuned}) {
    INFO(kernels::matmul_name(how));
    CHECK(torch::equal(kernels::linear_mm(how, x, w, b), at::linear(x, w, b)));
    CHECK(torch::equal(kernels::linear_mm(how, x, w, {}), at::linear(x, w)));
    CHECK(torch::equal(kernels::mm(how, g, w), g.mm(w)));
    auto out = torch::empty({5, 8});
    kernels::mm_out(how, out, g.t(), x2);
    CHECK(torch::equal(out, g.t().mm(x2)));
    auto acc = torch::ones({5, 8});
    kernels::addmm_(how, acc, g.t(), x2);
    CHECK(torch::equal(acc, at::addmm(torch::ones({5, 8}), g.t(), x2)));
  }
  CHECK(kernels::matmul_tuning().shapes == before);  // nothing timed off CUDA
}

namespace {
// bf16-exact values of `sizes` on the GPU (fp32 storage).
torch::Tensor exact(std::vector<int64_t> sizes, double scale = 1.0) {
  auto t = torch::randn(sizes, torch::TensorOptions().device(torch::kCUDA)) * scale;
  return t.to(torch::kBFloat16).to(torch::kFloat);
}
torch::Tensor bf(const torch::Tensor& t) { return t.to(torch::kBFloat16); }
torch::Tensor f64(const torch::Tensor& t) { return t.to(torch::kDouble); }
}  // namespace

TEST_CASE("gpu: kernels' matrix products through cuBLASLt in GPT's layouts, against fp64", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  torch::manual_seed(1);
  const int64_t rows = 384, in = 256, out = 320;
  const auto x = exact({2, rows / 2, in}), w = exact({out, in}, 0.1), b = exact({out}), g = exact({rows, out});
  const auto x2 = x.reshape({rows, in});
  const auto acc0 = exact({out, in});
  for (const auto how : {Matmul::cublaslt, Matmul::tuned}) {
    INFO(kernels::matmul_name(how));
    const auto before = kernels::matmul_tuning();
    // forward: x w^T + b, bf16 out (w read through its transposed view)
    auto y = kernels::linear_mm(how, bf(x), bf(w), bf(b));
    CHECK(y.sizes() == std::vector<int64_t>({2, rows / 2, out}));
    CHECK(y.scalar_type() == torch::kBFloat16);
    CHECK(relative_error(y, at::linear(f64(x), f64(w), f64(b))) < 8e-3);
    // input gradient: g w, bf16 out
    CHECK(relative_error(kernels::mm(how, bf(g), bf(w)), f64(g).mm(f64(w))) < 8e-3);
    // weight gradient: g^T x in fp32 (g read through its transposed view), written and added
    const auto gw = f64(g).t().mm(f64(x2));
    auto w_grad = kernels::mm(how, bf(g).t(), bf(x2), torch::kFloat);
    CHECK(w_grad.scalar_type() == torch::kFloat);
    CHECK(relative_error(w_grad, gw) < 1e-5);
    auto acc = acc0.clone();
    kernels::addmm_(how, acc, bf(g).t(), bf(x2));
    CHECK(relative_error(acc, f64(acc0) + gw) < 1e-5);
    // the classifier's chunks: rows 64..191 of an fp32 result written through a narrowed view
    auto dx = torch::zeros({rows, in}, x.options());
    auto part = dx.narrow(0, 64, 128);
    kernels::mm_out(how, part, bf(g).narrow(0, 64, 128), bf(w));
    CHECK(relative_error(part, f64(g).narrow(0, 64, 128).mm(f64(w))) < 1e-5);
    CHECK(dx.narrow(0, 0, 64).abs().max().item<float>() == 0.f);  // nothing written outside the view
    CHECK(dx.narrow(0, 192, rows - 192).abs().max().item<float>() == 0.f);
    const auto after = kernels::matmul_tuning();
    if (how == Matmul::tuned) {  // five shapes new to tuning (the first mode left them untuned)
      CHECK(after.shapes - before.shapes == 5);
      CHECK(after.first_ms > before.first_ms);
      CHECK(after.chosen_ms - before.chosen_ms <= after.first_ms - before.first_ms);
      CHECK(after.tuning_s > before.tuning_s);
    } else {
      CHECK(after.shapes == before.shapes);
    }
  }
}

TEST_CASE("gpu: kernels' matrix products fall back to ATen where cuBLASLt cannot take the operands", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  torch::manual_seed(2);
  // inner dimension 100: rows of 200 bytes, not a multiple of 16
  const auto a = bf(exact({64, 100})), b = bf(exact({100, 48}));
  const auto before = kernels::matmul_tuning().shapes;
  for (const auto how : {Matmul::cublaslt, Matmul::tuned}) {
    INFO(kernels::matmul_name(how));
    CHECK(torch::equal(kernels::mm(how, a, b), a.mm(b)));
    CHECK(torch::equal(kernels::mm(how, a, b, torch::kFloat), at::mm(a, b, torch::kFloat)));
  }
  CHECK(kernels::matmul_tuning().shapes == before);
  // fp32 operands: ATen's
  const auto a32 = exact({64, 64}), b32 = exact({64, 32});
  CHECK(torch::equal(kernels::mm(Matmul::tuned, a32, b32), a32.mm(b32)));
  CHECK(kernels::matmul_tuning().shapes == before);
}

TEST_CASE("gpu: tuned inside a CUDA-graph capture takes the heuristic's first algorithm, times nothing", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  torch::manual_seed(3);
  const auto a = bf(exact({136, 72})), b = bf(exact({72, 88}));  // a shape no other test uses
  auto out = torch::empty({136, 88}, a.options());
  const auto before = kernels::matmul_tuning().shapes;
  const auto side = c10::cuda::getStreamFromPool();
  at::cuda::CUDAGraph graph;
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    {  // cuBLAS's handles and workspace are made outside the capture, as a training warm-up makes them
      auto w = torch::empty({64, 64}, a.options());
      kernels::mm_out(Matmul::cublaslt, w, a.narrow(0, 0, 64).narrow(1, 0, 64), b.narrow(0, 0, 64).narrow(1, 0, 64));
      torch::cuda::synchronize();
    }
    graph.capture_begin();
    kernels::mm_out(Matmul::tuned, out, a, b);
    graph.capture_end();
  }
  CHECK(kernels::matmul_tuning().shapes == before);
  out.zero_();
  graph.replay();
  torch::cuda::synchronize();
  CHECK(relative_error(out, f64(a).mm(f64(b))) < 8e-3);
  // outside the capture the same shape is timed once
  kernels::mm_out(Matmul::tuned, out, a, b);
  kernels::mm_out(Matmul::tuned, out, a, b);
  CHECK(kernels::matmul_tuning().shapes == before + 1);
}

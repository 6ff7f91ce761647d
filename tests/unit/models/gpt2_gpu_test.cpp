// GPT's fused paths on the GPU under bf16 autocast against the plain model: selective
// recompute (kernels/cross_entropy), the fused residual LayerNorms (kernels/residual_norm) and
// the MLP with cuBLASLt's GELU epilogue (kernels/mlp).
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include <functional>

#include "efftrain/kernels/mlp.h"
#include "efftrain/models/gpt2.h"
#include "model_files.h"

using namespace efftrain;
using efftrain::test::relative_error;

namespace {

models::GptConfig small(int64_t width) {
  models::GptConfig c;
  c.vocab = 1000;
  c.vocab_multiple = 64;  // 1024 rows, -inf on the last 24
  c.context = 64;
  c.layers = 2;
  c.heads = 4;
  c.width = width;
  c.dropout = 0.0;
  c.fused_loss = true;
  return c;
}

struct Step {
  double loss;
  std::vector<torch::Tensor> grads;
  std::string norm_kernel;
  std::string gelu_kernel;
};

// One forward and backward of a 4 x 64 batch under bf16 autocast; `setup` changes the model.
Step bf16_step(const models::GptConfig& c, const std::function<void(models::Gpt&)>& setup) {
  torch::manual_seed(0);
  models::Gpt m(c);
  m->to(torch::kCUDA);
  {  // LayerNorms away from (1, 0), so that one applied in the wrong place shows
    torch::NoGradGuard ng;
    for (auto& p : m->named_parameters())
      if (p.key().find("ln_") != std::string::npos) p.value().uniform_(-1.5, 1.5);
  }
  if (setup) setup(m);
  torch::manual_seed(1);
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong);
  auto idx = torch::randint(0, 1000, {4, 64}, opts), tgt = torch::randint(0, 1000, {4, 64}, opts);
  torch::Tensor loss;
  {
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    loss = m->loss(idx, tgt);
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::clear_cache();
  }
  loss.backward();
  Step s{loss.item<double>(), {}, m->norm_kernel(), m->gelu_kernel()};
  for (const auto& p : m->parameters()) s.grads.push_back(p.grad().cpu());
  return s;
}

// bf16 matrix products in other groupings: within bf16 rounding (loss 1e-3, gradients 2e-2)
void check_close(const Step& a, const Step& ref) {
  CHECK(std::abs(a.loss - ref.loss) <= 1e-3 * std::abs(ref.loss));
  REQUIRE(a.grads.size() == ref.grads.size());
  for (size_t i = 0; i < ref.grads.size(); ++i) {
    INFO("parameter " << i);
    CHECK(relative_error(a.grads[i], ref.grads[i]) < 2e-2);
  }
}

}  // namespace

TEST_CASE("gpu: selective recompute under bf16 autocast gives the plain model's loss and gradients", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  auto c = small(64);
  c.head_chunk_rows = 100;  // 4 x 64 = 256 rows: chunks of 100, 100, 56
  check_close(bf16_step(c, [](models::Gpt& m) { m->set_selective_recompute(true); }), bf16_step(c, nullptr));
}

TEST_CASE("gpu: the fused residual LayerNorms under bf16 autocast give the plain model's loss and gradients", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  auto c = small(128);  // the kernels take widths of 128 x n
  const auto plain = bf16_step(c, nullptr);
  CHECK(plain.norm_kernel == "aten");
  c.fused_norm = true;
  const auto chain = bf16_step(c, nullptr);
  CHECK(chain.norm_kernel == "fused_kernel");
  check_close(chain, plain);
  // with a recomputed segment only the joins inside blocks are fused
  const auto within = bf16_step(c, [](models::Gpt& m) { m->set_checkpoint_segments({{0, 2}}); });
  CHECK(within.norm_kernel == "fused_kernel, within blocks");
  check_close(within, plain);
}

TEST_CASE("gpu: cuBLASLt's GELU epilogue (fused_gelu) under bf16 autocast gives the plain model's loss and gradients",
          "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  auto c = small(64);
  const auto plain = bf16_step(c, nullptr);
  CHECK(plain.gelu_kernel == "aten");
  c.fused_gelu = true;
  const auto fused = bf16_step(c, nullptr);
  CHECK(fused.gelu_kernel == "cublaslt_epilogue");
  check_close(fused, plain);
  // selective recompute: gelu(u) recomputed from the kept u in backward
  check_close(bf16_step(c, [](models::Gpt& m) { m->set_selective_recompute(true); }), plain);
}

TEST_CASE("gpu: task.model.matmul cublaslt and tuned under bf16 autocast give ATen's loss and gradients", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  for (bool gelu : {false, true}) {
    INFO("fused_gelu " << gelu);
    auto c = small(64);
    c.fused_gelu = gelu;
    const auto aten = bf16_step(c, nullptr);
    for (const auto how : {kernels::Matmul::cublaslt, kernels::Matmul::tuned}) {
      INFO(kernels::matmul_name(how));
      c.matmul = how;
      check_close(bf16_step(c, nullptr), aten);
      c.head_chunk_rows = 100;  // the classifier in chunks of 100, 100, 56 rows, selective recompute
      check_close(bf16_step(c, [](models::Gpt& m) { m->set_selective_recompute(true); }), aten);
      c.head_chunk_rows = 0;
    }
  }
}

namespace {
// The output and the gradients of sum(y * r) for y = f(x, w1, b1, w2, b2) and a fixed r, in f's dtype.
std::vector<torch::Tensor> mlp_grads(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& f,
                                     const std::vector<torch::Tensor>& inputs, const torch::Tensor& r) {
  std::vector<torch::Tensor> leaves;
  for (const auto& t : inputs) leaves.push_back(t.detach().clone().requires_grad_(true));
  auto y = f(leaves);
  (y.to(torch::kFloat) * r).sum().backward();
  std::vector<torch::Tensor> out{y.detach()};
  for (const auto& l : leaves) out.push_back(l.grad());
  return out;
}
}  // namespace

TEST_CASE("gpu: kernels::mlp in bf16: output and every gradient as close to fp32 as ATen's ops", "[gpu]") {
  if (!torch::cuda::is_available()) SKIP("needs a GPU");
  torch::manual_seed(3);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const int64_t n = 512, width = 64, hidden = 256, out = 96;
  // bias and activations of both signs around GELU's bend; inputs exact in bf16
  std::vector<torch::Tensor> inputs = {torch::randn({2, n / 2, width}, f32), torch::randn({hidden, width}, f32) * 0.2,
                                       torch::randn({hidden}, f32) * 0.5, torch::randn({out, hidden}, f32) * 0.1,
                                       torch::randn({out}, f32)};
  for (auto& t : inputs) t = t.to(torch::kBFloat16).to(torch::kFloat);
  const auto r = torch::randn({2, n / 2, out}, f32);  // the output's weights in the loss
  CHECK(std::string(kernels::mlp_path(inputs[0].to(torch::kBFloat16), width, hidden)) == "cublaslt_epilogue");
  CHECK(std::string(kernels::mlp_path(inputs[0], width, hidden)) == "aten");  // fp32, no autocast
  std::vector<torch::Tensor> inputs16;
  for (const auto& t : inputs) inputs16.push_back(t.to(torch::kBFloat16));
  for (bool keep : {true, false}) {
    INFO("GELU output " << (keep ? "kept" : "recomputed in backward"));
    auto run = [keep](bool fused) {
      return [keep, fused](const std::vector<torch::Tensor>& v) {
        return kernels::mlp(v[0], v[1], v[2], v[3], v[4], keep, fused);
      };
    };
    const auto ref = mlp_grads(run(false), inputs, r);  // fp32: ATen's ops
    const auto fused = mlp_grads(run(true), inputs16, r);
    const auto ops = mlp_grads(run(false), inputs16, r);
    REQUIRE(fused.size() == ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      INFO("tensor " << i << " (0: output, then x, w1, b1, w2, b2)");
      REQUIRE(fused[i].defined());
      CHECK(fused[i].scalar_type() == torch::kBFloat16);
      const double e_fused = relative_error(fused[i], ref[i]), e_ops = relative_error(ops[i], ref[i]);
      INFO("relative error against fp32: fused " << e_fused << ", ATen's ops " << e_ops);
      CHECK(e_fused <= 2 * e_ops + 1e-3);
      CHECK(e_fused < 2e-2);
    }
  }
}

// GPT's fused paths on the GPU under bf16 autocast against the plain model: selective
// recompute (kernels/cross_entropy) and the fused residual LayerNorms (kernels/residual_norm).
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include <functional>

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
  Step s{loss.item<double>(), {}, m->norm_kernel()};
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

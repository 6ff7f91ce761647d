#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <cmath>
#include <functional>

#include "efftrain/models/gpt2.h"
#include "efftrain/tasks/task.h"

using namespace efftrain;

namespace {
models::GptConfig tiny(bool sdpa, double dropout = 0.0) {
  models::GptConfig c;
  c.vocab = 97;
  c.context = 16;
  c.layers = 3;
  c.heads = 2;
  c.width = 16;
  c.dropout = dropout;
  c.sdpa = sdpa;
  return c;
}

struct LossGrads {
  double loss;
  std::vector<torch::Tensor> grads;
  std::string norm_kernel;
  std::string gelu_kernel;
};
// One training forward and backward on a fixed 3 x 16 batch with fixed dropout masks, on the
// model of `c` built from seed 0 and then changed by `setup`.
LossGrads cpu_step(const models::GptConfig& c, const std::function<void(models::Gpt&)>& setup) {
  torch::manual_seed(0);
  models::Gpt m(c);
  if (setup) setup(m);
  torch::manual_seed(1);
  auto idx = torch::randint(0, 97, {3, 16}, torch::kLong), tgt = torch::randint(0, 97, {3, 16}, torch::kLong);
  torch::manual_seed(2);  // the dropout masks
  auto loss = m->loss(idx, tgt);
  loss.backward();
  LossGrads r{loss.item<double>(), {}, m->norm_kernel(), m->gelu_kernel()};
  for (const auto& p : m->parameters()) r.grads.push_back(p.grad().clone());
  return r;
}
}  // namespace

TEST_CASE("GPT-2 small has exactly 124,439,808 parameters (tied embeddings)") {
  models::Gpt m(models::GptConfig{});
  CHECK(count_parameters(*m) == 124439808);
  // 6N (N without the position table) + attention term, per token at T = 1024.
  const double n = 124439808.0 - 1024 * 768;
  CHECK(m->train_flops_per_token(1024) == 6 * n + 12.0 * 12 * 1024 * 768);
}

TEST_CASE("plain and SDPA attention compute the same function (fp32)") {
  torch::manual_seed(0);
  models::Gpt a(tiny(false));
  torch::manual_seed(0);
  models::Gpt b(tiny(true));
  a->eval();
  b->eval();
  auto idx = torch::randint(0, 97, {3, 16}, torch::kLong);
  auto ya = a->forward(idx), yb = b->forward(idx);
  CHECK(ya.sizes() == torch::IntArrayRef({3, 16, 97}));
  CHECK(torch::allclose(ya, yb, 1e-5, 1e-5));
}

TEST_CASE("causal masking: a future token cannot change an earlier output") {
  for (bool sdpa : {false, true}) {
    torch::manual_seed(1);
    models::Gpt m(tiny(sdpa));
    m->eval();
    auto idx = torch::randint(0, 97, {1, 16}, torch::kLong);
    auto changed = idx.clone();
    changed[0][10] = (changed[0][10].item<int64_t>() + 1) % 97;
    auto y1 = m->forward(idx), y2 = m->forward(changed);
    CHECK(torch::equal(y1.slice(1, 0, 10), y2.slice(1, 0, 10)));
    CHECK_FALSE(torch::allclose(y1.slice(1, 10, 16), y2.slice(1, 10, 16)));
  }
}

TEST_CASE("checkpointed GPT: same loss and gradients with dropout on") {
  auto grads = [](std::vector<std::pair<int64_t, int64_t>> segs, bool sdpa) {
    torch::manual_seed(5);
    models::Gpt m(tiny(sdpa, /*dropout=*/0.2));
    m->train();
    m->set_checkpoint_segments(segs);
    auto idx = torch::randint(0, 97, {2, 16}, torch::kLong);
    auto tgt = torch::randint(0, 97, {2, 16}, torch::kLong);
    torch::manual_seed(11);
    auto loss = m->loss(idx, tgt);
    loss.backward();
    std::vector<torch::Tensor> g{loss.detach()};
    for (auto& p : m->parameters()) g.push_back(p.grad().clone());
    return g;
  };
  for (bool sdpa : {false, true}) {
    const auto plain = grads({}, sdpa), ckpt = grads({{0, 2}, {2, 1}}, sdpa);
    REQUIRE(plain.size() == ckpt.size());
    CHECK(torch::equal(plain[0], ckpt[0]));
    for (size_t i = 1; i < plain.size(); ++i) CHECK(torch::allclose(plain[i], ckpt[i], 1e-5, 1e-6));
  }
}

TEST_CASE("a padded vocabulary computes the unpadded model: same loss and gradients, padding stays zero") {
  struct Out {
    torch::Tensor loss, logits;
    std::vector<torch::Tensor> grads;
    torch::Tensor wte, wte_grad;
  };
  auto run = [](int64_t multiple) {
    auto c = tiny(/*sdpa=*/true, /*dropout=*/0.1);
    c.vocab_multiple = multiple;
    torch::manual_seed(3);
    models::Gpt m(c);
    m->train();
    auto idx = torch::randint(0, 97, {2, 16}, torch::kLong);
    torch::manual_seed(8);
    Out o;
    o.logits = m->forward(idx).detach();
    torch::manual_seed(8);
    o.loss = m->loss(idx, idx);
    o.loss.backward();
    for (const auto& item : m->named_parameters())
      if (item.key() != "wte.weight") o.grads.push_back(item.value().grad().clone());
    o.wte = m->named_parameters()["wte.weight"].detach().clone();
    o.wte_grad = m->named_parameters()["wte.weight"].grad().clone();
    return o;
  };
  const Out plain = run(1), padded = run(64);  // 97 -> 128 rows
  REQUIRE(padded.wte.size(0) == 128);
  CHECK(plain.wte.size(0) == 97);
  CHECK(torch::equal(padded.wte.narrow(0, 0, 97), plain.wte));  // the same initialization
  CHECK(torch::equal(padded.wte.narrow(0, 97, 31), torch::zeros({31, 16})));
  CHECK(torch::isinf(padded.logits.narrow(-1, 97, 31)).all().item<bool>());
  CHECK(torch::allclose(padded.logits.narrow(-1, 0, 97), plain.logits, 1e-5, 1e-6));
  CHECK(torch::allclose(padded.loss, plain.loss, 1e-6, 1e-7));
  CHECK(torch::equal(padded.wte_grad.narrow(0, 97, 31), torch::zeros({31, 16})));  // padding gets no gradient
  CHECK(torch::allclose(padded.wte_grad.narrow(0, 0, 97), plain.wte_grad, 1e-5, 1e-7));
  REQUIRE(padded.grads.size() == plain.grads.size());
  for (size_t i = 0; i < plain.grads.size(); ++i) CHECK(torch::allclose(padded.grads[i], plain.grads[i], 1e-5, 1e-7));
}

TEST_CASE("a GPT's fused loss equals its ATen loss on the CPU path") {
  auto c = tiny(true);
  c.vocab_multiple = 8;
  torch::manual_seed(0);
  models::Gpt a(c);
  c.fused_loss = true;
  torch::manual_seed(0);
  models::Gpt b(c);
  auto idx = torch::randint(0, 97, {3, 16}, torch::kLong), tgt = torch::randint(0, 97, {3, 16}, torch::kLong);
  {
    torch::NoGradGuard ng;  // evaluation: the logits whole, then the loss
    CHECK(a->loss(idx, tgt).item<double>() == b->loss(idx, tgt).item<double>());
    CHECK(a->loss_kernel() == "aten");
    CHECK(b->loss_kernel() == "aten");  // no CUDA here
  }
  auto la = a->loss(idx, tgt), lb = b->loss(idx, tgt);
  CHECK(std::abs(la.item<double>() - lb.item<double>()) <= 1e-6 * la.item<double>());
  CHECK(a->loss_kernel() == "aten");
  CHECK(b->loss_kernel() == "aten, chunked");  // training: the classifier's gradients in forward
  CHECK(a->head_chunk_rows() == 16384);
  c.selective_recompute = true;
  CHECK(models::Gpt(c)->head_chunk_rows() == 2048);
  c.head_chunk_rows = 5;
  CHECK(models::Gpt(c)->head_chunk_rows() == 5);
}

TEST_CASE("the chunked classifier of fused_loss gives the plain model's loss and gradients (fp32, dropout on)") {
  auto c = tiny(true, 0.1);
  c.vocab_multiple = 8;
  const auto plain = cpu_step(c, nullptr);
  for (int64_t chunk : {0, 7, 48}) {  // one chunk of 48 rows; seven (six of 7, one of 6)
    INFO("head_chunk_rows " << chunk);
    auto cc = c;
    cc.fused_loss = true;
    cc.head_chunk_rows = chunk;
    const auto r = cpu_step(cc, nullptr);
    CHECK(std::abs(r.loss - plain.loss) <= 1e-6 * std::abs(plain.loss));
    REQUIRE(r.grads.size() == plain.grads.size());
    for (size_t i = 0; i < plain.grads.size(); ++i) {
      INFO("parameter " << i);
      CHECK(torch::allclose(r.grads[i], plain.grads[i], 1e-5, 1e-7));
    }
  }
}

TEST_CASE("with a .grad there already (static gradients, a later micro-batch) the token embedding and the chunked "
          "classifier add theirs into it: the same sums") {
  auto c = tiny(true, 0.1);
  c.vocab_multiple = 8;
  c.fused_loss = true;
  c.head_chunk_rows = 7;
  const auto fresh = cpu_step(c, nullptr);
  const auto added = cpu_step(c, [](models::Gpt& m) {
    torch::NoGradGuard ng;
    for (auto& p : m->parameters()) p.mutable_grad() = torch::full_like(p, 0.25);
  });
  CHECK(added.loss == fresh.loss);
  REQUIRE(added.grads.size() == fresh.grads.size());
  for (size_t i = 0; i < fresh.grads.size(); ++i) {
    INFO("parameter " << i);
    CHECK(torch::allclose(added.grads[i], fresh.grads[i] + 0.25, 1e-6, 1e-7));
  }
}

TEST_CASE("selective recompute (GELU outputs, chunked logits) gives the same loss and gradients (fp32, dropout on)") {
  auto c = tiny(true, 0.1);
  c.vocab_multiple = 8;  // 97 -> 104 rows: the -inf padding goes through the chunks too
  auto run = [&](bool selective, bool fused) {
    auto cc = c;
    cc.fused_loss = fused;
    cc.head_chunk_rows = 7;  // 3 x 16 = 48 rows: six chunks of 7 and one of 6
    const auto r = cpu_step(cc, [&](models::Gpt& m) { m->set_selective_recompute(selective); });
    return std::make_pair(r.loss, r.grads);
  };
  auto [l0, g0] = run(false, false);
  auto [l1, g1] = run(true, false);
  auto [l2, g2] = run(true, true);
  CHECK(std::abs(l1 - l0) <= 1e-6 * std::abs(l0));
  CHECK(std::abs(l2 - l0) <= 1e-6 * std::abs(l0));
  REQUIRE(g0.size() == g1.size());
  for (size_t i = 0; i < g0.size(); ++i) {
    INFO("parameter " << i);
    CHECK(torch::allclose(g1[i], g0[i], 1e-5, 1e-7));
    CHECK(torch::allclose(g2[i], g0[i], 1e-5, 1e-7));
  }
  // the padding rows of the tied table get no gradient either way
  CHECK(g1[0].narrow(0, 97, 7).abs().max().item<float>() == 0.f);
}

TEST_CASE("fused residual LayerNorms (fused_norm) compute the unfused model: loss and gradients, dropout on") {
  auto c = tiny(true, 0.1);
  // recomputed segments: the residual joins inside blocks only; none: the chain across blocks
  for (const auto& segs : {std::vector<std::pair<int64_t, int64_t>>{}, {{0, 2}}}) {
    auto run = [&](bool fused) {
      auto cc = c;
      cc.fused_norm = fused;
      const auto r = cpu_step(cc, [&](models::Gpt& m) {
        m->set_checkpoint_segments(segs);
        torch::NoGradGuard ng;  // LayerNorms away from (1, 0), so that one applied in the wrong place shows
        for (auto& p : m->named_parameters())
          if (p.key().find("ln_") != std::string::npos) p.value().uniform_(-1.5, 1.5);
      });
      return std::make_tuple(r.loss, r.grads, r.norm_kernel);
    };
    INFO(segs.size() << " recomputed segments");
    auto [l0, g0, k0] = run(false);
    auto [l1, g1, k1] = run(true);
    CHECK(k0 == "aten");
    CHECK(k1 == (segs.empty() ? "aten" : "aten, within blocks"));  // the CPU runs ATen's ops
    CHECK(l1 == l0);  // the same ops in the same order
    REQUIRE(g0.size() == g1.size());
    for (size_t i = 0; i < g0.size(); ++i) {
      INFO("parameter " << i);
      CHECK(torch::equal(g1[i], g0[i]));
    }
  }
}

TEST_CASE("cuBLASLt's GELU epilogue (fused_gelu) falls back on the CPU to the same ops: loss and gradients, dropout on") {
  for (bool selective : {false, true}) {
    INFO("selective recompute " << selective);
    auto run = [&](bool fused) {
      auto c = tiny(true, 0.1);
      c.fused_gelu = fused;
      return cpu_step(c, [&](models::Gpt& m) { m->set_selective_recompute(selective); });
    };
    const auto a = run(false), b = run(true);
    CHECK(a.gelu_kernel == "aten");
    CHECK(b.gelu_kernel == "aten");
    CHECK(b.loss == a.loss);
    REQUIRE(a.grads.size() == b.grads.size());
    for (size_t i = 0; i < a.grads.size(); ++i) {
      INFO("parameter " << i);
      CHECK(torch::equal(b.grads[i], a.grads[i]));
    }
  }
}

TEST_CASE("task.model.matmul cublaslt / tuned fall back on the CPU to ATen's products: loss and gradients") {
  for (bool selective : {false, true}) {
    INFO("selective recompute " << selective);
    auto run = [&](kernels::Matmul how) {
      auto c = tiny(true, 0.1);
      c.fused_loss = true;
      c.fused_gelu = true;
      c.matmul = how;
      return cpu_step(c, [&](models::Gpt& m) { m->set_selective_recompute(selective); });
    };
    const auto a = run(kernels::Matmul::aten);
    for (const auto how : {kernels::Matmul::cublaslt, kernels::Matmul::tuned}) {
      INFO(kernels::matmul_name(how));
      const auto b = run(how);
      CHECK(b.loss == a.loss);
      REQUIRE(a.grads.size() == b.grads.size());
      for (size_t i = 0; i < a.grads.size(); ++i) {
        INFO("parameter " << i);
        CHECK(torch::equal(b.grads[i], a.grads[i]));
      }
    }
  }
}

TEST_CASE("use_sdpa_backend restricts scaled_dot_product_attention to one backend") {
  auto run = [](const std::string& backend) {
    models::use_sdpa_backend(backend);
    torch::manual_seed(0);
    models::Gpt m(tiny(true));
    torch::manual_seed(1);
    auto idx = torch::randint(0, 97, {3, 16}, torch::kLong);
    torch::NoGradGuard ng;
    auto loss = m->loss(idx, idx).item<double>();
    return std::make_pair(loss, m->attention_kernel());
  };
  const auto [l_auto, k_auto] = run("auto");
  const auto [l_math, k_math] = run("math");
  CHECK(k_math == "math");
  CHECK(k_auto != "math");  // the CPU's flash kernel
  CHECK(std::abs(l_math - l_auto) <= 1e-5 * l_auto);
  CHECK_THROWS(run("cudnn"));  // no cuDNN attention on the CPU: an error, not another backend
  CHECK_THROWS(models::use_sdpa_backend("fast"));
  const auto [l_again, k_again] = run("auto");  // all enabled again
  CHECK(k_again == k_auto);
  CHECK(l_again == l_auto);
  auto& ctx = at::globalContext();
  CHECK((ctx.userEnabledCuDNNSDP() && ctx.userEnabledFlashSDP() && ctx.userEnabledMemEfficientSDP() &&
         ctx.userEnabledMathSDP()));
}

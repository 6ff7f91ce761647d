#include <catch2/catch_test_macros.hpp>

#include <limits>

#include <torch/torch.h>

#include "efftrain/config/config.h"
#include "efftrain/engine/context.h"
#include "efftrain/memory/checkpoint.h"
#include "efftrain/memory/checkpointing.h"
#include "efftrain/models/models.h"

using namespace efftrain;

namespace {
using Segs = std::vector<std::pair<int64_t, int64_t>>;

Segs placement(const std::string& policy, int64_t every, int64_t blocks) {
  config::ExperimentConfig cfg;
  cfg.checkpointing.policy = policy;
  cfg.checkpointing.every = every;
  BuildContext ctx{cfg, torch::Device(torch::kCPU)};
  return CheckpointingRegistry::create(policy, ctx)->segments(blocks);
}

struct StepResult {
  std::vector<torch::Tensor> grads, buffers;
  torch::Tensor loss;
};

StepResult one_step(const Segs& segments) {
  torch::manual_seed(7);
  auto m = std::make_shared<models::ResNetImpl>(3, 4, std::vector<int64_t>{2, 2}, 10, false);
  m->train();
  m->set_checkpoint_segments(segments);
  auto x = torch::randn({4, 3, 16, 16});
  auto y = torch::randint(0, 10, {4}, torch::kLong);
  auto loss = torch::nn::functional::cross_entropy(m->forward(x), y);
  loss.backward();
  StepResult r;
  r.loss = loss.detach();
  for (auto& p : m->parameters()) r.grads.push_back(p.grad().clone());
  for (auto& b : m->buffers()) r.buffers.push_back(b.clone());
  return r;
}
}  // namespace

TEST_CASE("placements pick the segments they promise") {
  CHECK(placement("none", 0, 16).empty());
  CHECK(placement("sqrt", 0, 16) == Segs{{0, 4}, {4, 4}, {8, 4}, {12, 4}});  // ResNet-50
  CHECK(placement("sqrt", 0, 12) == Segs{{0, 4}, {4, 4}, {8, 4}});          // GPT-2 small: ceil(sqrt 12) = 4
  CHECK(placement("sqrt", 0, 5) == Segs{{0, 3}, {3, 2}});
  CHECK(placement("every", 2, 5) == Segs{{0, 2}, {2, 2}, {4, 1}});
}

TEST_CASE("sqrt_balanced: sqrt's segment count, shared out so that the largest segment is the smallest") {
  CHECK(sqrt_segment_count(16) == 4);
  CHECK(sqrt_segment_count(12) == 3);
  CHECK(sqrt_segment_count(10) == 3);  // segments of 4: 4, 4, 2
  CHECK(sqrt_segment_count(5) == 2);
  CHECK(sqrt_segment_count(1) == 1);
  CHECK(sqrt_segment_count(0) == 0);
  auto largest = [](const std::vector<BlockMemory>& b, const Segs& segs) {
    int64_t worst = 0;
    for (const auto& [first, count] : segs) {
      int64_t held = 0;
      for (int64_t i = first; i < first + count; ++i) held += b[i].activation_bytes;
      worst = std::max(worst, held);
    }
    return worst;
  };
  // Equal blocks (a GPT): the segments sqrt makes.
  const std::vector<BlockMemory> equal(12, BlockMemory{100, 10});
  CHECK(balanced_segments(equal, sqrt_segment_count(12)) == placement("sqrt", 0, 12));
  // ResNet-50 on CIFAR-10 in proportion: stage 1's three blocks and stage 2's first hold over half.
  std::vector<BlockMemory> r50;
  for (int64_t b : {1000, 1000, 1000, 1240, 520, 520, 520, 400, 260, 260, 260, 260, 260, 200, 130, 130})
    r50.push_back({b, 10});
  const Segs segs = balanced_segments(r50, 4);
  REQUIRE(segs.size() == 4);
  int64_t next = 0;
  for (const auto& [first, count] : segs) {  // contiguous, every block once
    CHECK(first == next);
    CHECK(count >= 1);
    next = first + count;
  }
  CHECK(next == 16);
  // The smallest largest segment over every way of cutting 16 blocks into 4 (455 ways).
  int64_t best = std::numeric_limits<int64_t>::max();
  for (int64_t a = 1; a < 16; ++a)
    for (int64_t b = a + 1; b < 16; ++b)
      for (int64_t c = b + 1; c < 16; ++c)
        best = std::min(best, largest(r50, Segs{{0, a}, {a, b - a}, {b, c - b}, {c, 16 - c}}));
  CHECK(largest(r50, segs) == best);
  CHECK(largest(r50, segs) == 2240);                        // {0,1} + ... : at most two of the large blocks together
  CHECK(largest(r50, placement("sqrt", 0, 16)) == 4240);   // sqrt's first segment
  CHECK(estimate_activation_peak(r50, segs) < estimate_activation_peak(r50, placement("sqrt", 0, 16)));
}

TEST_CASE("checkpointed ResNet: same loss and gradients, BatchNorm statistics updated once") {
  const auto plain = one_step({});
  const auto ckpt = one_step({{0, 2}, {2, 2}});
  const auto partial = one_step({{1, 2}});
  CHECK(torch::equal(plain.loss, ckpt.loss));
  REQUIRE(plain.grads.size() == ckpt.grads.size());
  for (size_t i = 0; i < plain.grads.size(); ++i) {
    CHECK(torch::allclose(plain.grads[i], ckpt.grads[i], 1e-5, 1e-6));
    CHECK(torch::allclose(plain.grads[i], partial.grads[i], 1e-5, 1e-6));
  }
  REQUIRE(plain.buffers.size() == ckpt.buffers.size());
  for (size_t i = 0; i < plain.buffers.size(); ++i) CHECK(torch::equal(plain.buffers[i], ckpt.buffers[i]));
}

TEST_CASE("checkpointing keeps gradient accumulation exact over two micro-batches") {
  auto accumulate = [](const Segs& segs) {
    torch::manual_seed(9);
    auto m = std::make_shared<models::ResNetImpl>(3, 4, std::vector<int64_t>{1, 2}, 10, false);
    m->train();
    m->set_checkpoint_segments(segs);
    for (int micro = 0; micro < 2; ++micro) {
      auto x = torch::randn({3, 3, 8, 8});
      auto y = torch::randint(0, 10, {3}, torch::kLong);
      (torch::nn::functional::cross_entropy(m->forward(x), y) / 2.0).backward();
    }
    std::vector<torch::Tensor> out;
    for (auto& p : m->parameters()) out.push_back(p.grad().clone());
    int64_t counters = 0;
    for (auto& b : m->named_buffers()) {
      out.push_back(b.value().clone());
      if (b.key().find("num_batches_tracked") != std::string::npos) {
        CHECK(b.value().item<int64_t>() == 2);  // one per forward, whatever was recomputed
        ++counters;
      }
    }
    CHECK(counters == 1 + 3 * 3 + 2);  // the stem's, three per block, the two downsamples'
    return out;
  };
  const auto plain = accumulate({}), ckpt = accumulate({{0, 3}});
  REQUIRE(plain.size() == ckpt.size());
  for (size_t i = 0; i < plain.size(); ++i) CHECK(torch::allclose(plain[i], ckpt[i], 1e-5, 1e-6));
}

TEST_CASE("models::batch_norm is BatchNorm2d's forward less its count, and updates nothing in a recompute") {
  torch::manual_seed(5);
  torch::nn::BatchNorm2d ref(6), ours(6);
  {
    torch::NoGradGuard ng;
    ref->weight.uniform_(0.5, 1.5);
    ref->bias.uniform_(-0.5, 0.5);
    ours->weight.copy_(ref->weight);
    ours->bias.copy_(ref->bias);
  }
  const auto x = torch::randn({4, 6, 5, 5}) * 3 + 1;
  const auto y_ref = ref->forward(x);
  const auto y = models::batch_norm(ours, x);
  CHECK(torch::equal(y, y_ref));
  CHECK(torch::equal(ours->running_mean, ref->running_mean));
  CHECK(torch::equal(ours->running_var, ref->running_var));
  CHECK(ref->num_batches_tracked.item<int64_t>() == 1);
  CHECK(ours->num_batches_tracked.item<int64_t>() == 0);  // the model counts: below
  models::count_batch_norm_forwards({ours});
  CHECK(ours->num_batches_tracked.item<int64_t>() == 1);

  const auto mean = ours->running_mean.clone(), var = ours->running_var.clone();
  {
    RecomputeScope recompute;
    CHECK(recomputing());
    CHECK(torch::equal(models::batch_norm(ours, x), y_ref));  // batch statistics, as in the forward
  }
  CHECK_FALSE(recomputing());
  CHECK(torch::equal(ours->running_mean, mean));
  CHECK(torch::equal(ours->running_var, var));

  ours->eval();  // outside training: the running statistics, and nothing counted
  CHECK(torch::equal(models::batch_norm(ours, x), ours->forward(x)));
  models::count_batch_norm_forwards({ours});
  CHECK(ours->num_batches_tracked.item<int64_t>() == 1);
}

TEST_CASE("checkpoint restores the RNG so dropout masks match in the recompute") {
  auto w = torch::randn({16, 16}, torch::requires_grad());
  auto f = [&](const torch::Tensor& h) { return torch::dropout(torch::matmul(h, w), 0.5, true); };
  auto x = torch::randn({8, 16}, torch::requires_grad());
  torch::manual_seed(3);
  auto y1 = f(x).sum();
  y1.backward();
  const auto g_plain = w.grad().clone();
  w.mutable_grad() = torch::Tensor();
  torch::manual_seed(3);
  auto y2 = checkpoint(f, x).sum();
  torch::manual_seed(99);  // the RNG moved on before backward: the recompute must not care
  y2.backward();
  CHECK(torch::equal(y1.detach(), y2.detach()));
  CHECK(torch::allclose(g_plain, w.grad(), 1e-6, 1e-7));
}


TEST_CASE("budget placement checkpoints the fewest segments, largest saving first") {
  // 9 blocks, sqrt segments of 3: S0 and S2 hold 300 bytes, S1 600 (block 4 is large); each
  // block's output is 10 bytes, all a checkpointed segment keeps.
  std::vector<BlockMemory> blocks(9, BlockMemory{100, 10});
  blocks[4].activation_bytes = 400;
  bool met = false;
  int64_t estimate = 0;
  CHECK(select_budget_segments(blocks, 2000, 3, &met, &estimate).empty());  // 1200 fits
  CHECK(met);
  CHECK(estimate == 1200);
  // S1 alone: 610 kept; recomputing S1 in backward peaks at 300 (S0) + 600 = 900.
  CHECK(select_budget_segments(blocks, 1000, 3, &met, &estimate) == Segs{{3, 3}});
  CHECK(met);
  CHECK(estimate == 900);
  // S1 and S0: 320 kept; the recompute of S1 peaks at 10 + 600 = 610.
  CHECK(select_budget_segments(blocks, 800, 3, &met, &estimate) == Segs{{0, 3}, {3, 3}});
  CHECK(estimate == 610);
  // 500 is out of reach (S1's recompute alone needs 600): all three, budget not met.
  CHECK(select_budget_segments(blocks, 500, 3, &met).size() == 3);
  CHECK_FALSE(met);
}

TEST_CASE("estimate_activation_peak: what forward keeps, or a recomputed segment on top of what precedes it") {
  // Four blocks of 100 bytes each, outputs of 10.
  const std::vector<BlockMemory> blocks(4, BlockMemory{100, 10});
  using Segs = std::vector<std::pair<int64_t, int64_t>>;
  CHECK(estimate_activation_peak(blocks, {}) == 400);
  // Both halves recomputed: forward keeps 10 + 10; backward of the second half holds 10 + 200.
  CHECK(estimate_activation_peak(blocks, Segs{{0, 2}, {2, 2}}) == 210);
  // Only the first half: forward keeps 10 + 200 (the second half stays).
  CHECK(estimate_activation_peak(blocks, Segs{{0, 2}}) == 210);
  // Every block alone: at most 30 kept + 100 recomputed.
  CHECK(estimate_activation_peak(blocks, Segs{{0, 1}, {1, 1}, {2, 1}, {3, 1}}) == 130);
  // A large first block dominates whatever the placement of the rest (ResNet-50's first stage).
  const std::vector<BlockMemory> skewed = {{1000, 10}, {100, 10}, {100, 10}, {100, 10}};
  CHECK(estimate_activation_peak(skewed, Segs{{0, 2}, {2, 2}}) == 1100);
}

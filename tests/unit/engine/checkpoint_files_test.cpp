#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/core/error.h"
#include "efftrain/engine/checkpoint.h"
#include "helpers.h"

using namespace efftrain;

namespace {
struct Small : torch::nn::Module {
  Small() { register_parameter("weight", torch::zeros({2, 3})); }
};
}  // namespace

TEST_CASE("load_model refuses a malformed archive with a user error naming the file (fuzz regression)") {
  // The fuzzer's archive makes torch's type parser throw std::runtime_error, which used to
  // escape as an internal error (exit 1) instead of bad input (exit 2).
  const std::string path = test::source_path("tests/fuzz/regressions/checkpoint-archive-runtime-error.pt");
  Small m;
  const std::string err = test::user_error_of([&] { load_model(m, path); });
  CHECK(err.rfind(path + ": cannot read the model archive", 0) == 0);
  CHECK(err.find('\n') == std::string::npos);
}

TEST_CASE("save_model and load_model round-trip; a missing tensor or another shape is named") {
  test::TempDir d;
  Small a;
  {
    torch::NoGradGuard ng;
    a.parameters()[0].copy_(torch::arange(6, torch::kFloat).view({2, 3}));
  }
  save_model(a, d.file("model.pt"));
  Small b;
  load_model(b, d.file("model.pt"));
  CHECK(torch::equal(a.parameters()[0], b.parameters()[0]));
  struct Other : torch::nn::Module {
    Other() { register_parameter("weight", torch::zeros({3, 2})); }
  } other;
  CHECK(test::user_error_of([&] { load_model(other, d.file("model.pt")); }).find("'weight' has shape [2, 3], the model has [3, 2]") !=
        std::string::npos);
  struct Named : torch::nn::Module {
    Named() { register_parameter("bias", torch::zeros({2})); }
  } named;
  CHECK(test::user_error_of([&] { load_model(named, d.file("model.pt")); }).find("no tensor 'bias'") != std::string::npos);
}

// Comm::sum_scalars: a step's device scalars of mixed dtypes summed over the ranks in one
// collective (two ranks in one process over Gloo).
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <future>

#include "efftrain/dist/comm.h"
#include "efftrain/dist/launcher.h"

using namespace efftrain;

namespace {

// What a rank saw; checked on the main thread (Catch2's assertions are not for other threads).
struct Seen {
  std::vector<torch::Tensor> out;
  double input_after = 0;  // the first input after the call
  size_t empty_out = 1;    // what summing no scalars returned
};

Seen sum_on_rank(int rank, int port) {
  dist::WorkerEnv env;
  env.rank = rank;
  env.world_size = env.local_world_size = 2;
  env.master_port = port;
  auto comm = dist::Comm::connect(env, torch::Device(torch::kCPU), "gloo", 60);
  const double r = rank;
  const std::vector<torch::Tensor> in{
      torch::tensor(0.1 + r, torch::kDouble),                 // a squared norm
      torch::tensor(static_cast<float>(rank), torch::kFloat),  // a found-inf flag (rank 1 overflowed)
      torch::tensor(int64_t{3} + rank, torch::kLong)};
  Seen seen;
  seen.out = comm->sum_scalars(in);
  seen.input_after = in[0].item<double>();
  seen.empty_out = comm->sum_scalars({}).size();
  return seen;
}

}  // namespace

TEST_CASE("sum_scalars sums mixed-dtype scalars over the ranks in one collective, each in its dtype") {
  const int port = dist::free_port();
  auto r0 = std::async(std::launch::async, sum_on_rank, 0, port);
  auto r1 = std::async(std::launch::async, sum_on_rank, 1, port);
  const std::vector<Seen> ranks{r0.get(), r1.get()};
  for (size_t rank = 0; rank < ranks.size(); ++rank) {
    const auto& out = ranks[rank].out;
    CHECK(ranks[rank].input_after == 0.1 + static_cast<double>(rank));  // the inputs are left as they were
    CHECK(ranks[rank].empty_out == 0);
    REQUIRE(out.size() == 3);
    CHECK(out[0].scalar_type() == torch::kDouble);
    CHECK(out[0].item<double>() == 0.1 + 1.1);  // fp64 end to end: no rounding through fp32
    CHECK(out[1].scalar_type() == torch::kFloat);
    CHECK(out[1].item<float>() == 1.0f);
    CHECK(out[2].scalar_type() == torch::kLong);
    CHECK(out[2].item<int64_t>() == 7);
  }
}

// Comm::sum_scalars: a step's device scalars of mixed dtypes summed over the ranks in one
// collective (two ranks in one process over Gloo).
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <future>

#include "efftrain/core/error.h"
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

Seen sum_on_rank(int rank, int port, bool agent_store) {
  dist::WorkerEnv env;
  env.rank = rank;
  env.world_size = env.local_world_size = 2;
  env.master_port = port;
  env.agent_store = agent_store;
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
  auto r0 = std::async(std::launch::async, sum_on_rank, 0, port, false);
  auto r1 = std::async(std::launch::async, sum_on_rank, 1, port, false);
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

TEST_CASE("under torchrun's agent store every rank, rank 0 too, is a client of the agent's TCPStore") {
  // torchrun's static rendezvous serves the store at MASTER_PORT itself and sets
  // TORCHELASTIC_USE_AGENT_STORE=True; a rank 0 that tried to serve it too could not bind it.
  c10d::TCPStoreOptions so;
  so.port = 0;
  so.isServer = true;
  so.waitWorkers = false;
  auto agent = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  const int port = agent->getPort();
  auto r0 = std::async(std::launch::async, sum_on_rank, 0, port, true);
  auto r1 = std::async(std::launch::async, sum_on_rank, 1, port, true);
  const std::vector<Seen> ranks{r0.get(), r1.get()};
  for (const auto& seen : ranks) {
    REQUIRE(seen.out.size() == 3);
    CHECK(seen.out[2].item<int64_t>() == 7);
  }
}

TEST_CASE("worker_env reads the store's socket (rank 0 only) and torchrun's agent-store flag") {
  ::setenv("RANK", "0", 1);
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("MASTER_PORT", "29500", 1);
  const int fd = ::open("/dev/null", O_RDONLY);
  REQUIRE(fd >= 0);
  const std::string fds = std::to_string(fd);
  ::setenv("EFFTRAIN_STORE_FD", fds.c_str(), 1);
  ::setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  auto e = dist::worker_env();
  REQUIRE(e);
  CHECK(e->store_fd == fd);
  CHECK(e->agent_store);
  CHECK(std::getenv("EFFTRAIN_STORE_FD") == nullptr);  // not passed on to this worker's children
  CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);      // nor the socket itself
  ::setenv("RANK", "1", 1);
  ::setenv("EFFTRAIN_STORE_FD", fds.c_str(), 1);
  ::setenv("TORCHELASTIC_USE_AGENT_STORE", "False", 1);
  e = dist::worker_env();
  CHECK_FALSE(e->store_fd);
  CHECK_FALSE(e->agent_store);
  ::setenv("RANK", "0", 1);
  ::setenv("EFFTRAIN_STORE_FD", "987654", 1);
  std::string err;
  try {
    dist::worker_env();
  } catch (const UserError& x) {
    err = x.what();
  }
  CHECK(err == "environment: EFFTRAIN_STORE_FD 987654 is not an open file descriptor");
  for (const char* v : {"RANK", "WORLD_SIZE", "MASTER_PORT", "EFFTRAIN_STORE_FD", "TORCHELASTIC_USE_AGENT_STORE"})
    ::unsetenv(v);
  ::close(fd);
}

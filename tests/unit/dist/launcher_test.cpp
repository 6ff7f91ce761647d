// The launcher on plain shell workers: torchrun's environment, the first failure's exit code,
// and how fast the rest are stopped.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <sched.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "efftrain/dist/launcher.h"
#include "helpers.h"

using namespace efftrain;
using namespace efftrain::test;

namespace {
dist::LaunchResult launch_sh(int n, const std::string& script, double grace_s = 10) {
  dist::LaunchOptions o;
  o.program = "/bin/sh";
  o.argv = {"sh", "-c", script};
  o.nproc = n;
  o.grace_s = grace_s;
  return dist::launch(o);
}
double seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

TEST_CASE("each worker sees torchrun's environment") {
  TempDir d;
  ::unsetenv("MASTER_ADDR");
  ::unsetenv("MASTER_PORT");
  const auto r = launch_sh(3, "env > '" + d.path() + "'/env.$RANK");
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.failed_rank == -1);
  std::string port;
  for (int rank = 0; rank < 3; ++rank) {
    const std::string env = read_text(d.file("env." + std::to_string(rank)));
    const std::string rs = std::to_string(rank);
    CHECK(env.find("\nRANK=" + rs + "\n") != std::string::npos);
    CHECK(env.find("\nLOCAL_RANK=" + rs + "\n") != std::string::npos);
    CHECK(env.find("\nWORLD_SIZE=3\n") != std::string::npos);
    CHECK(env.find("\nLOCAL_WORLD_SIZE=3\n") != std::string::npos);
    CHECK(env.find("\nMASTER_ADDR=127.0.0.1\n") != std::string::npos);
    const auto at = env.find("\nMASTER_PORT=");
    REQUIRE(at != std::string::npos);
    const std::string p = env.substr(at + 13, env.find('\n', at + 1) - at - 13);
    CHECK(std::atoi(p.c_str()) > 0);
    if (rank == 0) port = p;
    CHECK(p == port);  // one rendezvous port for all
  }
}

TEST_CASE("the rendezvous port listens before the workers start, and rank 0 alone inherits its socket") {
  // Rank 1 connects at once, before rank 0 has done anything; rank 0 holds the socket until then.
  // A port released by the launcher and bound again by rank 0 would refuse that connection (and
  // could be taken by another process in between).
  // With MASTER_ADDR set (here to a name), on every address: IPv4's loopback reaches it too.
  const bool named = GENERATE(false, true);
  CAPTURE(named);
  TempDir d;
  if (named) ::setenv("MASTER_ADDR", "localhost", 1);
  else ::unsetenv("MASTER_ADDR");
  ::unsetenv("MASTER_PORT");
  const std::string D = "'" + d.path() + "'";
  dist::LaunchOptions o;
  o.program = "/bin/bash";
  o.argv = {"bash", "-c",
            "if [ \"$RANK\" = 0 ]; then\n"
            "  [ -n \"$EFFTRAIN_STORE_FD\" ] && [ -S /proc/$$/fd/$EFFTRAIN_STORE_FD ] && echo socket > " + D + "/fd0\n"
            "  grep -h ' 0A ' /proc/net/tcp /proc/net/tcp6 | awk '{print $2}' |\n"  // listening sockets
            "    grep \":$(printf %04X $MASTER_PORT)$\" | cut -d: -f1 > " + D + "/address\n"
            "  for i in $(seq 150); do [ -f " + D + "/connected ] && exit 0; sleep 0.1; done; exit 3\n"
            "fi\n"
            "echo \"${EFFTRAIN_STORE_FD:-none}\" > " + D + "/fd1\n"
            "exec 3<>/dev/tcp/127.0.0.1/$MASTER_PORT && echo yes > " + D + "/connected\n"};
  o.nproc = 2;
  const auto r = dist::launch(o);
  const auto text = [&](const std::string& f) {
    return std::filesystem::exists(d.file(f)) ? read_text(d.file(f)) : std::string("(no file)");
  };
  CHECK(r.exit_code == 0);
  CHECK(text("fd0") == "socket\n");  // rank 0: EFFTRAIN_STORE_FD names the listening socket
  CHECK(text("fd1") == "none\n");    // rank 1: no socket of the store's
  CHECK(text("connected") == "yes\n");
  // Where it listens: 127.0.0.1 by default; with MASTER_ADDR every address (IPv6 and IPv4 on
  // one socket, or IPv4 alone on a host without IPv6).
  const std::string address = text("address");
  if (named) CHECK((address == "00000000000000000000000000000000\n" || address == "00000000\n"));
  else CHECK(address == "0100007F\n");
  ::unsetenv("MASTER_ADDR");
}

TEST_CASE("a worker exiting with code 7 stops the job with exit 7") {
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = launch_sh(3, "if [ \"$RANK\" = 1 ]; then sleep 0.5; exit 7; fi; sleep 60");
  CHECK(r.exit_code == 7);
  CHECK(r.failed_rank == 1);
  CHECK(seconds(t0) < 15);
}

TEST_CASE("a worker killed by SIGKILL stops the job with exit 137") {
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = launch_sh(2, "if [ \"$RANK\" = 0 ]; then sleep 0.5; kill -9 $$; fi; sleep 60");
  CHECK(r.exit_code == 128 + 9);
  CHECK(r.failed_rank == 0);
  CHECK(r.failed_signal == 9);
  CHECK(seconds(t0) < 15);
}

TEST_CASE("a worker that ignores SIGTERM is killed after the grace period") {
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = launch_sh(2, "if [ \"$RANK\" = 1 ]; then sleep 0.3; exit 3; fi; trap '' TERM; sleep 60 & wait; sleep 60",
                           /*grace_s=*/1);
  CHECK(r.exit_code == 3);
  const double s = seconds(t0);
  CHECK(s >= 1.0);
  CHECK(s < 15);
}

TEST_CASE("a job whose workers all succeed exits 0") {
  const auto r = launch_sh(2, "exit 0");
  CHECK(r.exit_code == 0);
  CHECK(r.failed_rank == -1);
  CHECK_FALSE(r.interrupted);
}

TEST_CASE("bind_cpus gives each worker its own share of the CPUs; the restart count is torchrun's") {
  TempDir d;
  cpu_set_t mine;
  CPU_ZERO(&mine);
  REQUIRE(::sched_getaffinity(0, sizeof mine, &mine) == 0);
  const int allowed = CPU_COUNT(&mine);
  if (allowed < 2) SKIP("needs two CPUs");
  dist::LaunchOptions o;
  o.program = "/bin/sh";
  o.argv = {"sh", "-c", "grep Cpus_allowed_list /proc/self/status > '" + d.path() +
                            "'/cpus.$RANK; echo $TORCHELASTIC_RESTART_COUNT/$TORCHELASTIC_MAX_RESTARTS > '" +
                            d.path() + "'/restart.$RANK"};
  o.nproc = 2;
  o.bind_cpus = true;
  o.restart_count = 1;
  o.max_restarts = 3;
  REQUIRE(dist::launch(o).exit_code == 0);
  const std::string a = read_text(d.file("cpus.0")), b = read_text(d.file("cpus.1"));
  CHECK(a != b);
  CHECK(read_text(d.file("restart.1")) == "1/3\n");
  // Without binding every worker keeps the launcher's set.
  o.bind_cpus = false;
  REQUIRE(dist::launch(o).exit_code == 0);
  CHECK(read_text(d.file("cpus.0")) == read_text(d.file("cpus.1")));
}

// The launcher: efftrain's own torchrun. Starts N workers (this binary, re-executed) with
// torchrun's environment contract, streams their output with a rank prefix, and watches them:
// the first failure stops the rest (SIGTERM, then SIGKILL after a grace period) and decides
// the exit code. Torch-free.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace efftrain::dist {

struct LaunchOptions {
  std::string program;                  // executable of each worker; empty = this binary (/proc/self/exe)
  std::vector<std::string> argv;        // its arguments, argv[0] included
  int nproc = 1;
  std::string master_addr;              // empty = MASTER_ADDR from the environment, else 127.0.0.1
  int master_port = 0;                  // 0 = MASTER_PORT from the environment, else a free port,
                                        // held listening and handed to rank 0 (EFFTRAIN_STORE_FD)
  double grace_s = 10;                  // SIGTERM -> SIGKILL
  bool bind_cpus = false;               // worker r on the r-th contiguous share of the allowed CPUs
  int restart_count = 0;                // TORCHELASTIC_RESTART_COUNT of this attempt
  int max_restarts = 0;                 // TORCHELASTIC_MAX_RESTARTS
};

struct LaunchResult {
  int exit_code = 0;      // 0, or the first failure's (128 + signal for a signal)
  int failed_rank = -1;   // the first worker that failed; -1 = none
  int failed_signal = 0;  // its signal, when it was killed by one
  bool interrupted = false;  // the launcher itself got SIGINT/SIGTERM
};

// Runs the job to the end. Prints "[rank r] ..." lines on stdout/stderr as the workers write them.
LaunchResult launch(const LaunchOptions& opts);

// A socket bound to a free TCP port (on 127.0.0.1, or on every IPv6 and IPv4 address) and
// listening: {fd, port}.
std::pair<int, int> listen_on_free_port(bool loopback_only);

// A free TCP port on 127.0.0.1 (bound, read back, released: another process may take it before
// it is bound again; for tests in one process).
int free_port();

// Fault injection for tests of the failure handling, from EFFTRAIN_FAULT="RANK:ACTION@POINT"
// (ACTION: exit=N | kill | hang; POINT: rendezvous | step=N). No-op when unset, for other ranks,
// and in a restarted attempt (TORCHELASTIC_RESTART_COUNT > 0).
void maybe_fault(int rank, const std::string& point);

}  // namespace efftrain::dist

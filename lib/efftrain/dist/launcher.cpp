#include "efftrain/dist/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <optional>
#include <thread>
#include <tuple>
#include <utility>

#include "efftrain/core/error.h"

namespace efftrain::dist {

namespace {

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

struct Worker {
  pid_t pid = -1;
  int fd = -1;             // read end of its stdout+stderr
  std::string pending;     // partial line
  bool running = true;
  int status = 0;
};

void emit(int rank, const std::string& line) {
  std::string s = "[rank " + std::to_string(rank) + "] " + line + "\n";
  ssize_t off = 0;
  while (off < static_cast<ssize_t>(s.size())) {
    const ssize_t n = ::write(STDOUT_FILENO, s.data() + off, s.size() - off);
    if (n <= 0) break;
    off += n;
  }
}

void note(const std::string& msg) { std::fprintf(stderr, "efftrain launch: %s\n", msg.c_str()); }

// Reads what the worker wrote; returns false at end of file.
bool drain(int rank, Worker& w) {
  char buf[8192];
  const ssize_t n = ::read(w.fd, buf, sizeof buf);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    if (!w.pending.empty()) emit(rank, w.pending);
    w.pending.clear();
    ::close(w.fd);
    w.fd = -1;
    return false;
  }
  w.pending.append(buf, static_cast<size_t>(n));
  size_t start = 0, nl;
  while ((nl = w.pending.find('\n', start)) != std::string::npos) {
    emit(rank, w.pending.substr(start, nl - start));
    start = nl + 1;
  }
  w.pending.erase(0, start);
  return true;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
                                  strsignal(WTERMSIG(status)) + ")";
  return "ended";
}

}  // namespace

std::pair<int, int> listen_on_free_port(bool loopback_only) {
  // Every address: IPv6 and IPv4 on one socket where the host has IPv6 (as TCPStore's own server
  // binds), else IPv4.
  int s = -1;
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (!loopback_only && (s = ::socket(AF_INET6, SOCK_STREAM, 0)) >= 0) {
    const int off = 0;
    ::setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_any;
    len = sizeof *a;
  } else {
    if ((s = ::socket(AF_INET, SOCK_STREAM, 0)) < 0)
      throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(loopback_only ? INADDR_LOOPBACK : INADDR_ANY);
    len = sizeof *a;
  }
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  if (::bind(s, sa, len) != 0 || ::listen(s, 128) != 0 || ::getsockname(s, sa, &len) != 0) {
    const int err = errno;
    ::close(s);
    throw std::runtime_error(std::string("cannot listen on a free port: ") + std::strerror(err));
  }
  const int port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return {s, port};
}

int free_port() {
  const auto [s, port] = listen_on_free_port(true);
  ::close(s);
  return port;
}

LaunchResult launch(const LaunchOptions& opts) {
  std::string addr = opts.master_addr;
  if (addr.empty()) addr = std::getenv("MASTER_ADDR") ? std::getenv("MASTER_ADDR") : "127.0.0.1";
  int port = opts.master_port;
  if (port == 0 && std::getenv("MASTER_PORT")) port = std::atoi(std::getenv("MASTER_PORT"));
  // A port of our choosing stays bound and listening from here until rank 0's store takes the
  // socket over (EFFTRAIN_STORE_FD): a port chosen, released and bound again later could be
  // taken by another socket in between, and rank 0 then failed with EADDRINUSE (seen once on
  // 2x H200; which socket took it was not traced).
  int store_fd = -1;
  if (port == 0) std::tie(store_fd, port) = listen_on_free_port(addr == "127.0.0.1");

  struct sigaction sa{}, old_int{}, old_term{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  g_signal = 0;

  std::vector<int> cpus;  // the CPUs this process may use, for bind_cpus
  if (opts.bind_cpus) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  std::vector<Worker> workers(static_cast<size_t>(opts.nproc));
  std::fflush(nullptr);
  for (int r = 0; r < opts.nproc; ++r) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::setpgid(0, 0);                      // its own process group: stopping it stops its children too
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the launcher
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      if (static_cast<int>(cpus.size()) >= opts.nproc) {
        const size_t share = cpus.size() / static_cast<size_t>(opts.nproc);
        cpu_set_t set;
        CPU_ZERO(&set);
        for (size_t i = share * static_cast<size_t>(r); i < share * static_cast<size_t>(r + 1); ++i) CPU_SET(cpus[i], &set);
        ::sched_setaffinity(0, sizeof set, &set);
      }
      const auto set = [](const char* k, const std::string& v) { ::setenv(k, v.c_str(), 1); };
      set("RANK", std::to_string(r));
      set("LOCAL_RANK", std::to_string(r));
      set("WORLD_SIZE", std::to_string(opts.nproc));
      set("LOCAL_WORLD_SIZE", std::to_string(opts.nproc));
      set("GROUP_RANK", "0");
      set("ROLE_RANK", std::to_string(r));
      set("ROLE_WORLD_SIZE", std::to_string(opts.nproc));
      set("MASTER_ADDR", addr);
      set("MASTER_PORT", std::to_string(port));
      if (r == 0 && store_fd >= 0) {
        set("EFFTRAIN_STORE_FD", std::to_string(store_fd));
      } else {
        if (store_fd >= 0) ::close(store_fd);
        ::unsetenv("EFFTRAIN_STORE_FD");
      }
      set("TORCHELASTIC_RESTART_COUNT", std::to_string(opts.restart_count));
      set("TORCHELASTIC_MAX_RESTARTS", std::to_string(opts.max_restarts));
      // As torchrun: one OpenMP thread per worker unless the user says otherwise. Measured on
      // 2x H200 (docs/results.md): ResNet-50 ddp at 1 thread ran 13.6k img/s in two repeats,
      // at 4 threads 12.6k and 11.0k (idle OpenMP threads compete with the launch threads).
      if (!std::getenv("OMP_NUM_THREADS")) set("OMP_NUM_THREADS", "1");
      std::vector<char*> args;
      for (const auto& a : opts.argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(opts.program.empty() ? "/proc/self/exe" : opts.program.c_str(), args.data());
      std::fprintf(stderr, "efftrain launch: cannot start worker %d: %s\n", r, std::strerror(errno));
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here: no race with the signals below
    ::close(fds[1]);
    ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    ::fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    workers[r].pid = pid;
    workers[r].fd = fds[0];
  }
  if (store_fd >= 0) ::close(store_fd);  // rank 0 holds it now
  note("started " + std::to_string(opts.nproc) + " workers, rendezvous at " + addr + ":" + std::to_string(port) +
       (std::getenv("OMP_NUM_THREADS") ? "" : "; OMP_NUM_THREADS=1 for each (set it to change that)"));

  LaunchResult res;
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> kill_at, drain_until;
  auto stop_all = [&](const std::string& why) {
    if (kill_at) return;
    note(why + "; stopping the other workers (SIGTERM, SIGKILL after " + std::to_string(static_cast<int>(opts.grace_s)) +
         " s)");
    for (auto& w : workers)
      if (w.running) ::kill(-w.pid, SIGTERM);
    kill_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opts.grace_s * 1000));
  };

  while (true) {
    std::vector<pollfd> pfds;
    std::vector<int> ranks;
    for (int r = 0; r < opts.nproc; ++r)
      if (workers[r].fd >= 0) {
        pfds.push_back({workers[r].fd, POLLIN, 0});
        ranks.push_back(r);
      }
    bool any_running = false;
    for (const auto& w : workers) any_running |= w.running;
    if (!any_running && !drain_until) drain_until = Clock::now() + std::chrono::seconds(2);
    // Every worker has ended: read what is left, but not forever (a leftover child of a
    // worker may hold its pipe open).
    if (!any_running && (pfds.empty() || Clock::now() > *drain_until)) break;
    if (!pfds.empty()) {
      const int n = ::poll(pfds.data(), pfds.size(), 100);
      if (n > 0)
        for (size_t i = 0; i < pfds.size(); ++i)
          if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) drain(ranks[i], workers[ranks[i]]);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (int r = 0; r < opts.nproc; ++r) {
      auto& w = workers[r];
      if (!w.running) continue;
      int status = 0;
      if (::waitpid(w.pid, &status, WNOHANG) != w.pid) continue;
      w.running = false;
      w.status = status;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!ok && res.failed_rank < 0 && !res.interrupted) {
        res.failed_rank = r;
        res.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        res.failed_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        stop_all("rank " + std::to_string(r) + " (pid " + std::to_string(w.pid) + ") " + describe(status));
      }
    }
    if (g_signal && !res.interrupted) {
      res.interrupted = true;
      if (res.failed_rank < 0) res.exit_code = 128 + g_signal;
      stop_all(std::string("received ") + strsignal(g_signal));
    }
    if (kill_at && Clock::now() > *kill_at) {
      for (auto& w : workers)
        if (w.running) ::kill(-w.pid, SIGKILL);
      kill_at = Clock::now() + std::chrono::hours(24);
    }
  }
  for (auto& w : workers) {
    if (w.fd >= 0) ::close(w.fd);
    ::kill(-w.pid, SIGKILL);  // leftovers of the worker's process group, if any
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return res;
}

void maybe_fault(int rank, const std::string& point) {
  const char* spec = std::getenv("EFFTRAIN_FAULT");
  if (!spec || !*spec) return;
  if (const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT"); restart && std::atoi(restart) > 0)
    return;  // the fault belongs to the first attempt; a restarted job runs clean
  const std::string s = spec;
  const auto colon = s.find(':'), at = s.find('@');
  if (colon == std::string::npos || at == std::string::npos || at < colon)
    throw UserError("EFFTRAIN_FAULT: expected RANK:ACTION@POINT (e.g. 1:exit=7@step=3), found '" + s + "'");
  if (std::atoi(s.substr(0, colon).c_str()) != rank || s.substr(at + 1) != point) return;
  const std::string action = s.substr(colon + 1, at - colon - 1);
  std::fprintf(stderr, "efftrain: EFFTRAIN_FAULT: rank %d: %s at %s\n", rank, action.c_str(), point.c_str());
  std::fflush(nullptr);
  if (action.rfind("exit=", 0) == 0) std::_Exit(std::atoi(action.c_str() + 5));
  if (action == "kill") ::raise(SIGKILL);
  if (action == "hang")
    while (true) ::pause();
  throw UserError("EFFTRAIN_FAULT: unknown action '" + action + "' (exit=N, kill or hang)");
}

}  // namespace efftrain::dist

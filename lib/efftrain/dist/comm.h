// dist::Comm: this process's place in a multi-process job (torchrun's environment contract),
// the TCPStore rendezvous, and the collectives of its process group (NCCL on CUDA, Gloo on CPU).
#pragma once

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <memory>
#include <optional>
#include <string>

namespace efftrain::dist {

// What torchrun (or efftrain's own launcher, or a Slurm wrapper) tells a worker.
struct WorkerEnv {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  // Where the rendezvous store lives. efftrain's launcher chooses the port and holds it
  // listening until rank 0 takes the socket over (EFFTRAIN_STORE_FD, rank 0 only), so no other
  // process can take the port in between. torchrun's agent serves the store itself and says so
  // (TORCHELASTIC_USE_AGENT_STORE=True): then every rank, rank 0 included, is a client.
  std::optional<int> store_fd;
  bool agent_store = false;
};

// The worker environment when RANK and WORLD_SIZE are set, else nullopt (a plain process).
// A malformed or inconsistent variable is a UserError naming it.
std::optional<WorkerEnv> worker_env();

using Work = c10::intrusive_ptr<c10d::Work>;

// The rendezvous store's server, started by rank 0 as early as its start-up allows when it
// serves on the socket the launcher handed it (EFFTRAIN_STORE_FD): until a server runs there,
// the other ranks' connections wait in the socket's backlog with no timeout, so a rank 0 that
// hung before Comm::connect would hang them too. Served, they wait for the missing rank with
// the store's timeout. nullptr where this rank serves nothing (the other ranks; torchrun's
// agent store; no socket handed over: Comm::connect binds MASTER_PORT then).
struct StoreServer;
std::shared_ptr<StoreServer> serve_store(const WorkerEnv& env, double timeout_s);

class Comm {
 public:
  // Rendezvous through a c10d::TCPStore at MASTER_ADDR:MASTER_PORT (rank 0 serves it, on the
  // launcher's socket where there is one; torchrun's agent where it serves it) and a
  // process group for `device`: "nccl", "gloo" or "auto" (nccl on CUDA, gloo on CPU). Throws
  // std::runtime_error with a clear message when the others do not arrive within `timeout_s`,
  // which is also the timeout of every collective.
  static std::shared_ptr<Comm> connect(const WorkerEnv& env, torch::Device device, const std::string& backend,
                                       double timeout_s, std::shared_ptr<StoreServer> served = nullptr);
  ~Comm();  // shuts the process group down
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& backend_name() const { return backend_name_; }

  // Asynchronous collectives on dense tensors of the group's device; keep the tensors alive and
  // untouched until wait(). On CUDA, wait() orders the current stream after the collective.
  Work all_reduce_sum(torch::Tensor t);                               // in place
  Work reduce_scatter_sum(torch::Tensor out, torch::Tensor in);       // in.numel() == size * out.numel()
  Work all_gather(torch::Tensor out, torch::Tensor in);               // out.numel() == size * in.numel()
  void broadcast(std::vector<torch::Tensor> tensors, int root);       // blocking
  // Device scalars (any dtype) summed over the ranks in one collective, packed as fp64; each
  // comes back in its own dtype. On CUDA the host does not wait (the stream does).
  std::vector<torch::Tensor> sum_scalars(const std::vector<torch::Tensor>& scalars);
  void barrier();
  // Host-side agreement at points every rank reaches (a tiny all-reduce).
  bool any(bool local);
  double sum(double local);
  // Small strings through the rendezvous store (per-rank report figures).
  void publish(const std::string& key, const std::string& value);
  std::string fetch(const std::string& key);

 private:
  Comm() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
  std::string backend_name_;
  torch::Device device_{torch::kCPU};
};

}  // namespace efftrain::dist

#include "efftrain/dist/comm.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef EFFTRAIN_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <fcntl.h>

#include <cstdlib>

#include "efftrain/core/error.h"

namespace efftrain::dist {

namespace {

std::optional<int> env_int(const char* name, int lo) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || x < lo || x > (1 << 20))
    throw UserError(std::string("environment variable ") + name + ": expected an integer >= " + std::to_string(lo) +
                    ", found '" + v + "'");
  return static_cast<int>(x);
}

std::chrono::milliseconds millis(double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1000)); }

}  // namespace

std::optional<WorkerEnv> worker_env() {
  const auto rank = env_int("RANK", 0);
  const auto world = env_int("WORLD_SIZE", 1);
  if (!rank && !world) return std::nullopt;
  if (!rank || !world)
    throw UserError(std::string("environment: ") + (rank ? "RANK" : "WORLD_SIZE") + " is set but " +
                    (rank ? "WORLD_SIZE" : "RANK") + " is not (a worker needs both, as torchrun sets them)");
  WorkerEnv e;
  e.rank = *rank;
  e.world_size = *world;
  if (e.rank >= e.world_size)
    throw UserError("environment: RANK " + std::to_string(e.rank) + " is not below WORLD_SIZE " +
                    std::to_string(e.world_size));
  e.local_rank = env_int("LOCAL_RANK", 0).value_or(e.rank);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", 1).value_or(e.world_size);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  const auto port = env_int("MASTER_PORT", 1);
  if (e.world_size > 1 && !port)
    throw UserError("environment: MASTER_PORT is not set (WORLD_SIZE is " + std::to_string(e.world_size) + ")");
  e.master_port = port.value_or(0);
  if (e.master_port > 65535) throw UserError("environment: MASTER_PORT " + std::to_string(e.master_port) + " is not a port");
  if (const auto fd = env_int("EFFTRAIN_STORE_FD", 0); fd && e.rank == 0) {
    if (::fcntl(*fd, F_GETFD) < 0)
      throw UserError("environment: EFFTRAIN_STORE_FD " + std::to_string(*fd) + " is not an open file descriptor");
    ::fcntl(*fd, F_SETFD, FD_CLOEXEC);  // the store's, not for this worker's children
    e.store_fd = fd;
  }
  ::unsetenv("EFFTRAIN_STORE_FD");
  if (const char* a = std::getenv("TORCHELASTIC_USE_AGENT_STORE")) e.agent_store = std::string(a) == "True";
  return e;
}

struct StoreServer {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

namespace {

c10d::TCPStoreOptions store_options(const WorkerEnv& env, double timeout_s) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  so.isServer = env.rank == 0 && !env.agent_store;
  if (so.isServer) so.masterListenFd = env.store_fd;
  so.numWorkers = env.world_size;
  so.waitWorkers = true;
  so.timeout = millis(timeout_s);
  return so;
}

[[noreturn]] void rendezvous_failed(const WorkerEnv& env, double timeout_s, const std::exception& e) {
  std::string what = e.what();
  if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
  throw std::runtime_error("rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
                           " failed within " + std::to_string(static_cast<int>(timeout_s)) +
                           " s (distributed.timeout_s): rank " + std::to_string(env.rank) + " of " +
                           std::to_string(env.world_size) + ": " + what);
}

}  // namespace

std::shared_ptr<StoreServer> serve_store(const WorkerEnv& env, double timeout_s) {
  auto so = store_options(env, timeout_s);
  if (!so.isServer || !so.masterListenFd) return nullptr;
  so.waitWorkers = false;  // Comm::connect waits for them
  auto s = std::make_shared<StoreServer>();
  try {
    s->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    rendezvous_failed(env, timeout_s, e);
  }
  return s;
}

struct Comm::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

std::shared_ptr<Comm> Comm::connect(const WorkerEnv& env, torch::Device device, const std::string& backend,
                                    double timeout_s, std::shared_ptr<StoreServer> served) {
  std::string name = backend;
  if (name == "auto") name = device.is_cuda() ? "nccl" : "gloo";
  if (name == "nccl" && !device.is_cuda())
    throw UserError("distributed.backend: nccl needs CUDA devices; this run is on " + device.str() + " (use gloo)");
  if (name == "gloo" && device.is_cuda())
    throw UserError("distributed.backend: gloo here runs on CPU tensors only; this run is on " + device.str() +
                    " (use nccl)");
  std::shared_ptr<Comm> c(new Comm());
  c->impl_ = std::make_unique<Impl>();
  c->rank_ = env.rank;
  c->size_ = env.world_size;
  c->backend_name_ = name;
  c->device_ = device;

  try {
    if (served) {
      served->store->waitForWorkers();
      c->impl_->store = served->store;
    } else {
      c->impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options(env, timeout_s));
    }
  } catch (const std::exception& e) {
    rendezvous_failed(env, timeout_s, e);
  }
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("pg/", c->impl_->store);
  if (name == "gloo") {
    auto o = c10d::ProcessGroupGloo::Options::create(millis(timeout_s));
    // One host: loopback. Several: the address this host's name resolves to.
    o->devices.push_back(env.world_size == env.local_world_size
                             ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                             : c10d::ProcessGroupGloo::createDefaultDevice());
    o->threads = 2;
    // Gloo connects every pair here, through the store: a rank that never arrived times out here.
    try {
      c->impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, env.rank, env.world_size, o);
    } catch (const std::exception& e) {
      rendezvous_failed(env, timeout_s, e);
    }
  } else {
#ifdef EFFTRAIN_WITH_NCCL
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device.index()));
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = millis(timeout_s);
    c->impl_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, env.rank, env.world_size, o);
#else
    throw UserError("distributed.backend: nccl: this build of efftrain has no NCCL (nccl.h was not found)");
#endif
  }
  return c;
}

Comm::~Comm() {
  if (impl_ && impl_->backend) {
    try {
      impl_->backend->shutdown();
    } catch (...) {
    }
  }
}

Work Comm::all_reduce_sum(torch::Tensor t) {
  std::vector<at::Tensor> ts{std::move(t)};
  return impl_->backend->allreduce(ts);
}

Work Comm::reduce_scatter_sum(torch::Tensor out, torch::Tensor in) {
  return impl_->backend->_reduce_scatter_base(out, in);
}

Work Comm::all_gather(torch::Tensor out, torch::Tensor in) { return impl_->backend->_allgather_base(out, in); }

void Comm::broadcast(std::vector<torch::Tensor> tensors, int root) {
  c10d::BroadcastOptions o;
  o.rootRank = root;
  for (auto& t : tensors) {
    std::vector<at::Tensor> one{t};
    impl_->backend->broadcast(one, o)->wait();
  }
}

std::vector<torch::Tensor> Comm::sum_scalars(const std::vector<torch::Tensor>& scalars) {
  if (scalars.empty()) return {};
  std::vector<torch::Tensor> flat;
  for (const auto& t : scalars) flat.push_back(t.detach().reshape({1}).to(torch::kDouble));
  auto packed = torch::cat(flat);
  all_reduce_sum(packed)->wait();
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < scalars.size(); ++i)
    out.push_back(packed[static_cast<int64_t>(i)].to(scalars[i].scalar_type()));
  return out;
}

void Comm::barrier() {
  auto t = torch::zeros({1}, torch::TensorOptions().device(device_));
  all_reduce_sum(t)->wait();
  if (device_.is_cuda()) t.cpu();
}

bool Comm::any(bool local) { return sum(local ? 1.0 : 0.0) > 0; }

double Comm::sum(double local) {
  auto t = torch::full({1}, local, torch::TensorOptions().device(device_).dtype(torch::kDouble));
  all_reduce_sum(t)->wait();
  return t.item<double>();
}

void Comm::publish(const std::string& key, const std::string& value) {
  impl_->store->set("efftrain/" + key, std::vector<uint8_t>(value.begin(), value.end()));
}

std::string Comm::fetch(const std::string& key) {
  const auto v = impl_->store->get("efftrain/" + key);
  return std::string(v.begin(), v.end());
}

}  // namespace efftrain::dist

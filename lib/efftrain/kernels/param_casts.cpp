#include "efftrain/kernels/param_casts.h"

#include "efftrain/kernels/linear.h"

#include <c10/cuda/CUDAGraphsC10Utils.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>

#ifdef EFFTRAIN_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "efftrain/kernels/glue.h"
#endif

namespace efftrain::kernels {

namespace {
struct Copy {
  torch::Tensor src, copy;
  const void* data = nullptr;  // src's storage at the refresh
  int64_t version = -1;        // src's version at the refresh; -1: no copy yet
};
// Every live ParamCasts' copies, by the source's TensorImpl.
std::mutex g_mutex;
std::unordered_map<const c10::TensorImpl*, Copy*> g_copies;

constexpr int64_t kChunk = int64_t{1} << 16;  // elements per block of the cast kernel
constexpr int64_t kAlign = 64;                // elements: each copy starts 128-byte aligned
}  // namespace

struct ParamCasts::Impl {
  std::vector<Copy> copies;
  at::ScalarType dt = at::kFloat;
  torch::Tensor flat;                // every copy, in dt
  torch::Tensor table;  // the kernel's CastChunk entries, on the device
};

ParamCasts::ParamCasts(std::vector<torch::Tensor> tensors) : impl_(std::make_unique<Impl>()) {
  for (auto& t : tensors)
    if (t.defined() && t.is_cuda() && t.scalar_type() == torch::kFloat && t.is_non_overlapping_and_dense())
      impl_->copies.push_back(Copy{t, {}, nullptr, -1});
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& c : impl_->copies) g_copies[c.src.unsafeGetTensorImpl()] = &c;
}

ParamCasts::~ParamCasts() {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& c : impl_->copies) {
    auto it = g_copies.find(c.src.unsafeGetTensorImpl());
    if (it != g_copies.end() && it->second == &c) g_copies.erase(it);
  }
}

void ParamCasts::refresh(at::ScalarType dt) {
  TORCH_CHECK(dt == at::kHalf || dt == at::kBFloat16, "ParamCasts: fp16 or bf16 only");
  Impl& m = *impl_;
  if (m.copies.empty()) return;
  const auto device = m.copies.front().src.device();
  const bool moved = std::any_of(m.copies.begin(), m.copies.end(),
                                 [](const Copy& c) { return c.data != c.src.data_ptr(); });  // since the last refresh
  if (dt != m.dt || moved || !m.flat.defined()) {  // new buffers and table
    TORCH_CHECK(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None,
                "ParamCasts: its buffers would be made while a CUDA graph is captured (refresh once before the "
                "capture; the parameters must not move after it)");
    int64_t total = 0;
    for (const auto& c : m.copies) total += (c.src.numel() + kAlign - 1) / kAlign * kAlign;
    m.flat = torch::empty({total}, c10::TensorOptions().device(device).dtype(dt));
    int64_t at = 0;
#ifdef EFFTRAIN_WITH_KERNELS
    std::vector<CastChunk> chunks;
#endif
    for (auto& c : m.copies) {
      const int64_t n = c.src.numel();
      // the source's layout (channels_last convolution weights): the kernel copies memory in order
      c.copy = m.flat.narrow(0, at, n).as_strided(c.src.sizes(), c.src.strides());
#ifdef EFFTRAIN_WITH_KERNELS
      for (int64_t s = 0; s < n; s += kChunk)
        chunks.push_back(CastChunk{c.src.data_ptr<float>() + s,
                                   static_cast<char*>(c.copy.data_ptr()) + s * m.flat.element_size(),
                                   std::min(kChunk, n - s)});
#endif
      at += (n + kAlign - 1) / kAlign * kAlign;
    }
#ifdef EFFTRAIN_WITH_KERNELS
    const auto bytes = static_cast<int64_t>(chunks.size() * sizeof(CastChunk));
    m.table = torch::from_blob(chunks.data(), {bytes}, torch::kByte).to(device);
#endif
    m.dt = dt;
  }
#ifdef EFFTRAIN_WITH_KERNELS
  const c10::cuda::CUDAGuard guard(device);
  check_launch(cast_chunks(dtype_of(m.flat), reinterpret_cast<const CastChunk*>(m.table.data_ptr()),
                           m.table.numel() / static_cast<int64_t>(sizeof(CastChunk)), stream()),
               "parameter casts");
#else
  for (auto& c : m.copies) c.copy.copy_(c.src);
#endif
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& c : m.copies) {
    c.data = c.src.data_ptr();
    c.version = static_cast<int64_t>(c.src._version());
  }
}

void ParamCasts::invalidate() {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& c : impl_->copies) c.version = -1;
}

torch::Tensor ParamCasts::current(const torch::Tensor& t, at::ScalarType dt) {
  if (!t.defined()) return {};
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_copies.find(t.unsafeGetTensorImpl());
  if (it == g_copies.end()) return {};
  const Copy& c = *it->second;
  if (c.version < 0 || c.copy.scalar_type() != dt || c.data != t.data_ptr() ||
      static_cast<int64_t>(t._version()) != c.version)
    return {};
  return c.copy;
}

void refresh_casts(std::shared_ptr<ParamCasts>& casts, const torch::Tensor& x, bool wanted,
                   const std::function<std::vector<torch::Tensor>()>& tensors) {
  const auto dt = run_dtype(x);
  if (!wanted || !x.is_cuda() || !torch::GradMode::is_enabled() || (dt != torch::kHalf && dt != torch::kBFloat16)) {
    if (casts) casts->invalidate();
    return;
  }
  if (!casts) casts = std::make_shared<ParamCasts>(tensors());
  casts->refresh(dt);
}

}  // namespace efftrain::kernels

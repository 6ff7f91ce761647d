#include "efftrain/kernels/matmul.h"

#ifdef EFFTRAIN_WITH_CUBLASLT
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include <chrono>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "efftrain/kernels/cublaslt.h"
#endif

namespace efftrain::kernels {

const char* matmul_name(Matmul m) {
  switch (m) {
    case Matmul::cublaslt: return "cublaslt";
    case Matmul::tuned: return "tuned";
    default: return "aten";
  }
}

std::optional<Matmul> parse_matmul(const std::string& s) {
  if (s == "aten") return Matmul::aten;
  if (s == "cublaslt") return Matmul::cublaslt;
  if (s == "tuned") return Matmul::tuned;
  return std::nullopt;
}

namespace {
std::mutex g_mutex;  // the algorithm cache and the tuning totals
MatmulTuning g_tuning;

#ifdef EFFTRAIN_WITH_CUBLASLT
// cuBLASLt computes column-major D = op(A) op(B); a row-major product out = a b [m, n] is its
// transpose, out^T [n, m] = b^T a^T, so cuBLASLt's A is b and its B is a. One operand x [r, c]
// (row-major terms) as cuBLASLt's op(X) = x^T [c, r]: stored rows (unit column stride) are the
// column-major x^T itself (no transpose); a transposed view (unit row stride) is column-major x
// (transpose).
struct Operand {
  cublasOperation_t op = CUBLAS_OP_N;
  int64_t rows = 0, cols = 0, ld = 0;  // the stored column-major matrix
};

// Whether x [r, c] is one cuBLASLt takes (16-byte aligned, leading dimension 16-byte multiple).
bool operand(const torch::Tensor& x, Operand& o) {
  const int64_t r = x.size(0), c = x.size(1), bytes = static_cast<int64_t>(x.element_size());
  if (x.stride(1) == 1 && x.stride(0) >= c) o = {CUBLAS_OP_N, c, r, x.stride(0)};
  else if (x.stride(0) == 1 && x.stride(1) >= r) o = {CUBLAS_OP_T, r, c, x.stride(1)};
  else return false;
  return o.ld * bytes % 16 == 0 && lt_aligned(x.data_ptr());
}

cudaDataType_t lt_type(at::ScalarType s) {
  return s == torch::kHalf ? CUDA_R_16F : s == torch::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F;
}

// The largest power of two (up to 256) that divides p's address: what the heuristic is told.
uint32_t alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

struct Entry {
  std::optional<cublasLtMatmulAlgo_t> first;  // the heuristic's first; none: ATen runs
  std::optional<cublasLtMatmulAlgo_t> tuned;  // the fastest candidate, once timed
};
std::map<std::vector<int64_t>, Entry> g_algos;

// The fastest of `found` for p (time per product over kReps runs after one warm-up, into p's own
// output), the heuristic's first unless another beats it by more than kMargin. Synchronizes the
// device; adds to g_tuning.
cublasLtMatmulAlgo_t fastest(const LtProblem& p, const std::vector<cublasLtMatmulHeuristicResult_t>& found,
                             cudaStream_t stream) {
  constexpr int kReps = 10;
  const auto t0 = std::chrono::steady_clock::now();
  cudaEvent_t start, stop;
  TORCH_CHECK(cudaEventCreate(&start) == cudaSuccess && cudaEventCreate(&stop) == cudaSuccess, "matmul tuning: events");
  std::vector<float> ms(found.size(), -1.f);
  for (size_t i = 0; i < found.size(); ++i) {
    auto once = [&] { return lt_launch(p, found[i].algo, p.d, stream) == CUBLAS_STATUS_SUCCESS; };
    if (!once()) continue;
    cudaEventRecord(start, stream);
    bool ok = true;
    for (int r = 0; r < kReps && ok; ++r) ok = once();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float e = 0;
    if (ok && cudaEventElapsedTime(&e, start, stop) == cudaSuccess) ms[i] = e / kReps;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  TORCH_CHECK(ms[0] >= 0, "matmul tuning: the heuristic's first algorithm did not run");
  size_t best = 0;
  for (size_t i = 1; i < found.size(); ++i)
    if (ms[i] >= 0 && ms[i] < ms[best]) best = i;
  if (ms[best] > ms[0] * (1.0 - kMargin)) best = 0;
  g_tuning.shapes += 1;
  g_tuning.changed += best != 0;
  g_tuning.first_ms += ms[0];
  g_tuning.chosen_ms += ms[best];
  g_tuning.tuning_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return found[best].algo;
}

bool capturing(cudaStream_t s) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(s, &st) == cudaSuccess && st != cudaStreamCaptureStatusNone;
}
}  // namespace

LtProblem::LtProblem(int device) : key{device} {
  lt_check(cublasLtMatmulDescCreate(&desc.h, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul descriptor");
}

void LtProblem::transpose(cublasLtMatmulDescAttributes_t which, cublasOperation_t op) {
  set(which, op);
  key.insert(key.end(), {static_cast<int64_t>(which), static_cast<int64_t>(op)});
}

void LtProblem::epilogue(cublasLtEpilogue_t e) {
  set(CUBLASLT_MATMUL_DESC_EPILOGUE, e);
  key.push_back(static_cast<int64_t>(e));
}

void LtProblem::layout(LtLayout& l, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  lt_check(cublasLtMatrixLayoutCreate(&l.h, type, rows, cols, ld), "matrix layout");
  key.insert(key.end(), {static_cast<int64_t>(type), rows, cols, ld});
}

cublasStatus_t lt_launch(const LtProblem& p, const cublasLtMatmulAlgo_t& algo, void* d, cudaStream_t stream) {
  const float one = 1.0f;
  return cublasLtMatmul(at::cuda::getCurrentCUDABlasLtHandle(), p.desc.h, &one, p.a, p.la.h, p.b, p.lb.h, &p.beta, d,
                        p.ld.h, d, p.ld.h, &algo, at::cuda::getCUDABlasLtWorkspace(),
                        at::cuda::getCUDABlasLtWorkspaceSize(), stream);
}

std::optional<cublasLtMatmulAlgo_t> lt_algo(Matmul how, const LtProblem& p, const torch::Tensor& out) {
  const auto stream = c10::cuda::getCurrentCUDAStream().stream();
  const uint32_t align[3] = {alignment(p.a), alignment(p.b), alignment(p.d)};  // A, B, C = D
  auto key = p.key;
  key.insert(key.end(), {p.beta != 0, align[0], align[1], align[2]});
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_algos.find(key);
  // The capture status is asked only while the shape waits to be timed, not on every product.
  const bool untimed = how == Matmul::tuned && (it == g_algos.end() || (!it->second.tuned && it->second.first));
  const bool tune = untimed && !capturing(stream);
  if (it == g_algos.end() || tune) {
    const int want = tune ? kCandidates : 1;
    LtPreference pref;
    lt_check(cublasLtMatmulPreferenceCreate(&pref.h), "preference");
    const size_t workspace = at::cuda::getCUDABlasLtWorkspaceSize();
    auto prefer = [&](cublasLtMatmulPreferenceAttributes_t which, const auto& v) {
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref.h, which, &v, sizeof(v)), "preference attribute");
    };
    prefer(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, workspace);
    prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align[0]);
    prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align[1]);
    prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align[2]);
    prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align[2]);
    std::vector<cublasLtMatmulHeuristicResult_t> found(want);
    int count = 0;
    const auto s = cublasLtMatmulAlgoGetHeuristic(at::cuda::getCurrentCUDABlasLtHandle(), p.desc.h, p.la.h, p.lb.h,
                                                  p.ld.h, p.ld.h, pref.h, want, found.data(), &count);
    found.resize(s == CUBLAS_STATUS_SUCCESS ? count : 0);
    Entry e;
    if (!found.empty()) e.first = found[0].algo;
    if (tune && !found.empty()) {
      // Timed in the product's own output: no device memory beyond it (a scratch of the
      // classifier's logits would be 1.6 GB on GPT-2 small's peak). Where the product adds into
      // out (beta 1), out's values wait on the host and come back.
      const auto kept = p.beta != 0 ? out.to(torch::kCPU) : torch::Tensor();
      e.tuned = fastest(p, found, stream);
      if (kept.defined()) out.copy_(kept);
    }
    it = g_algos.insert_or_assign(key, e).first;
  }
  return how == Matmul::tuned && it->second.tuned ? it->second.tuned : it->second.first;
}

namespace {
// out = a b (+ beta out) (+ bias) through cuBLASLt; false (nothing enqueued) where it cannot take
// the operands or has no algorithm for them.
bool lt_matmul(Matmul how, torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, float beta,
               const torch::Tensor& bias) {
  const auto in = a.scalar_type();
  if (!(a.is_cuda() && b.is_cuda() && out.is_cuda() && a.dim() == 2 && b.dim() == 2 && out.dim() == 2 &&
        (in == torch::kHalf || in == torch::kBFloat16) && b.scalar_type() == in &&
        (out.scalar_type() == in || out.scalar_type() == torch::kFloat) && a.size(1) == b.size(0) &&
        out.size(0) == a.size(0) && out.size(1) == b.size(1) && a.numel() > 0 && b.numel() > 0))
    return false;
  if (bias.defined() && !(bias.is_cuda() && bias.scalar_type() == out.scalar_type() && bias.dim() == 1 &&
                          bias.size(0) == out.size(1) && bias.is_contiguous() && lt_aligned(bias.data_ptr())))
    return false;
  Operand oa, ob, od;
  if (!operand(b, oa) || !operand(a, ob) || !operand(out, od) || od.op != CUBLAS_OP_N) return false;
  const c10::cuda::CUDAGuard guard(a.device());
  LtProblem p(a.get_device());
  p.a = b.data_ptr(), p.b = a.data_ptr(), p.d = out.data_ptr(), p.beta = beta;  // cuBLASLt's A is b
  p.transpose(CUBLASLT_MATMUL_DESC_TRANSA, oa.op);
  p.transpose(CUBLASLT_MATMUL_DESC_TRANSB, ob.op);
  if (bias.defined()) {
    p.epilogue(CUBLASLT_EPILOGUE_BIAS);
    p.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias.data_ptr());
  }
  const auto ti = lt_type(in);
  p.layout(p.la, ti, oa.rows, oa.cols, oa.ld);
  p.layout(p.lb, ti, ob.rows, ob.cols, ob.ld);
  p.layout(p.ld, lt_type(out.scalar_type()), od.rows, od.cols, od.ld);
  const auto algo = lt_algo(how, p, out);
  if (!algo) return false;
  lt_check(lt_launch(p, *algo, p.d, c10::cuda::getCurrentCUDAStream().stream()), "matmul");
  return true;
}
#else
bool lt_matmul(Matmul, torch::Tensor&, const torch::Tensor&, const torch::Tensor&, float, const torch::Tensor&) {
  return false;
}
#endif
}  // namespace

void mm_out(Matmul how, torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias) {
  if (how != Matmul::aten && lt_matmul(how, out, a, b, 0.f, bias)) return;
  if (bias.defined()) at::addmm_out(out, bias, a, b);
  else if (out.scalar_type() != a.scalar_type()) at::mm_out(out, a, b, out.scalar_type());
  else at::mm_out(out, a, b);
}

void addmm_(Matmul how, torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b) {
  if (how != Matmul::aten && lt_matmul(how, out, a, b, 1.f, {})) return;
  if (out.scalar_type() != a.scalar_type()) at::addmm_out(out, out, a, b, out.scalar_type());
  else at::addmm_out(out, out, a, b);
}

torch::Tensor mm(Matmul how, const torch::Tensor& a, const torch::Tensor& b, std::optional<at::ScalarType> dtype) {
  const auto dt = dtype.value_or(a.scalar_type());
  if (how != Matmul::aten) {
    auto out = torch::empty({a.size(0), b.size(1)}, a.options().dtype(dt));
    if (lt_matmul(how, out, a, b, 0.f, {})) return out;
  }
  return dt != a.scalar_type() ? at::mm(a, b, dt) : a.mm(b);
}

torch::Tensor linear_mm(Matmul how, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (how != Matmul::aten && x.dim() >= 1) {
    const auto x2 = x.reshape({-1, x.size(-1)});
    auto out = torch::empty({x2.size(0), w.size(0)}, x.options());
    if (lt_matmul(how, out, x2, w.t(), 0.f, b)) {
      auto sizes = x.sizes().vec();
      sizes.back() = w.size(0);
      return out.view(sizes);
    }
  }
  return at::linear(x, w, b.defined() ? std::optional<torch::Tensor>(b) : std::nullopt);
}

MatmulTuning matmul_tuning() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_tuning;
}

}  // namespace efftrain::kernels

// cuBLASLt's status check, owned descriptors and the algorithm choice shared by the wrappers
// compiled with cublasLt.h (EFFTRAIN_WITH_CUBLASLT: kernels/mlp.cpp, kernels/matmul.cpp).
#pragma once

#include <c10/util/Exception.h>
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "efftrain/kernels/matmul.h"

namespace efftrain::kernels {

inline void lt_check(cublasStatus_t s, const char* what) {
  TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuBLASLt ", what, ": ", cublasLtGetStatusString(s));
}

// Whether p is 16-byte aligned (what cuBLASLt's fast kernels read).
inline bool lt_aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T, cublasStatus_t (*Destroy)(T)>
struct Owned {
  T h = nullptr;
  Owned() = default;
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() {
    if (h) Destroy(h);
  }
};
using LtDesc = Owned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using LtLayout = Owned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using LtPreference = Owned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

// One cuBLASLt matmul D = op(A) op(B) (+ beta C, C = D; alpha 1), fp32 accumulation, built
// through the methods so that `key` records what the choice of algorithm depends on.
struct LtProblem {
  LtDesc desc;
  LtLayout la, lb, ld;
  const void *a = nullptr, *b = nullptr;  // A and B (column-major, as la and lb describe them)
  void* d = nullptr;
  float beta = 0;
  std::vector<int64_t> key;

  explicit LtProblem(int device);
  void transpose(cublasLtMatmulDescAttributes_t which, cublasOperation_t op);  // TRANSA / TRANSB
  void epilogue(cublasLtEpilogue_t e);
  template <typename T>
  void set(cublasLtMatmulDescAttributes_t which, const T& value) {  // pointers, aux leading dimension
    lt_check(cublasLtMatmulDescSetAttribute(desc.h, which, &value, sizeof(value)), "matmul attribute");
  }
  void layout(LtLayout& l, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld);
};

// The algorithm for p as `how` asks (cublaslt: the heuristic's first; tuned: the fastest candidate,
// timed once per key outside a capture, writing p's output `out` -- its values kept and put back
// where beta is not 0; aten is not asked). The heuristic is told each pointer's alignment. nullopt
// where cuBLASLt has no algorithm: the caller runs ATen's op.
std::optional<cublasLtMatmulAlgo_t> lt_algo(Matmul how, const LtProblem& p, const torch::Tensor& out);
cublasStatus_t lt_launch(const LtProblem& p, const cublasLtMatmulAlgo_t& algo, void* d, cudaStream_t stream);

}  // namespace efftrain::kernels

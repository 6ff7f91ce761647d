// GPT's matrix products (its linear layers forward and backward, the classifier) through ATen, or
// through the project's own cuBLASLt call with the algorithm chosen per shape
// (task.model.matmul):
//   aten      ATen's at::linear / mm / addmm (cuBLAS picks the kernel), as PyTorch runs them;
//   cublaslt  cuBLASLt with its heuristic's first algorithm for the shape;
//   tuned     cuBLASLt with the fastest of the heuristic's first kCandidates algorithms, each timed
//             once per shape (device, sizes, layouts, dtypes, epilogue) the first time the shape runs
//             outside a CUDA-graph capture (train.cuda_graph's warm-up comes first), kept for the
//             process, timed in the product's own output (no device memory beyond it). A
//             candidate replaces the heuristic's first only when it is faster by more than
//             kMargin, so shapes whose candidates time alike keep the heuristic's choice. The choice
//             follows the card's timing: another run may pick another kernel for a shape whose
//             candidates are within noise of each other, and round differently.
// The same products in every mode; kernels differ in their order of summation (rounding only).
// Where cuBLASLt cannot take the operands (not CUDA; not fp16/bf16; a leading dimension not a
// multiple of 8; a pointer not 16-byte aligned; a build without cublasLt.h), ATen's op runs.
#pragma once

#include <torch/torch.h>

#include <optional>

namespace efftrain::kernels {

enum class Matmul { aten, cublaslt, tuned };
const char* matmul_name(Matmul m);
// "aten" | "cublaslt" | "tuned"; nullopt for anything else.
std::optional<Matmul> parse_matmul(const std::string& s);

constexpr int kCandidates = 16;
constexpr double kMargin = 0.02;

// a [m, k], b [k, n]: 2-D, each with a unit stride in one dimension (a transposed view is read as
// one, no copy). out [m, n] with unit column stride, in a's dtype or fp32.
// out = a b (+ bias, [n], out's dtype: one value per column)
void mm_out(Matmul how, torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b,
            const torch::Tensor& bias = {});
// out += a b
void addmm_(Matmul how, torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b);
// a b in `dtype` (a's when not given)
torch::Tensor mm(Matmul how, const torch::Tensor& a, const torch::Tensor& b,
                 std::optional<at::ScalarType> dtype = std::nullopt);
// at::linear(x, w, b): x [..., in], w [out, in], b [out] or undefined.
torch::Tensor linear_mm(Matmul how, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

// What `tuned` did in this process so far: shapes timed, how many of them took another algorithm
// than the heuristic's first, the sums over the shapes of one product's time with the heuristic's
// first algorithm and with the one chosen (ms), and the seconds spent timing.
struct MatmulTuning {
  int64_t shapes = 0, changed = 0;
  double first_ms = 0, chosen_ms = 0, tuning_s = 0;
};
MatmulTuning matmul_tuning();

}  // namespace efftrain::kernels

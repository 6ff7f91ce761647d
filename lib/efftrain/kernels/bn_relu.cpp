#include "efftrain/kernels/bn_relu.h"

#include "efftrain/kernels/linear.h"

#ifdef EFFTRAIN_WITH_CUDNN
// The BatchNorm "Ex" entry points are marked deprecated in cuDNN 9 (ATen's BatchNorm calls them too).
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <ATen/cuda/Exceptions.h>
#include <ATen/cudnn/Descriptors.h>
#include <ATen/cudnn/Handle.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <atomic>
#endif
#ifdef EFFTRAIN_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "efftrain/kernels/glue.h"
#endif

namespace efftrain::kernels {

namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x (and z where defined: the same dtype, shape and device) NHWC fp16/bf16 on CUDA, as both
// fused paths want.
[[maybe_unused]] bool same_nhwc_half(const torch::Tensor& x, const torch::Tensor& z) {
  const auto nhwc_half = [](const torch::Tensor& t) {
    return t.is_cuda() && (t.scalar_type() == torch::kHalf || t.scalar_type() == torch::kBFloat16) && t.dim() == 4 &&
           t.is_contiguous(torch::MemoryFormat::ChannelsLast);
  };
  return nhwc_half(x) && (!z.defined() || (nhwc_half(z) && z.scalar_type() == x.scalar_type() &&
                                           z.sizes() == x.sizes() && z.device() == x.device()));
}

// The optional inputs of a fused BatchNorm's forward (z, running mean, running variance),
// undefined where not given.
[[maybe_unused]] std::array<torch::Tensor, 3> given(const std::optional<torch::Tensor>& z,
                                                    const std::optional<torch::Tensor>& mean,
                                                    const std::optional<torch::Tensor>& var) {
  return {z.value_or(torch::Tensor()), mean.value_or(torch::Tensor()), var.value_or(torch::Tensor())};
}

// The scale's and shift's gradients of a fused BatchNorm's backward (add: z was an input): where
// autograd would add them into .grad (grad_in_place: CUDA graphs' static gradients, a later
// micro-batch), the kernel adds them there itself and autograd gets none (in_place), which saves
// two small add kernels per BatchNorm; else new tensors. needs_input_grad counts autograd's
// inputs: the optional z and running statistics only where given.
struct ParamGrads {
  torch::Tensor dweight, dbias;
  bool in_place;
};
[[maybe_unused]] ParamGrads param_grads(AutogradContext* ctx, bool add, const torch::Tensor& weight,
                                        const torch::Tensor& bias, const torch::Device& device) {
  const size_t w_input = add ? 2 : 1;
  const bool in_place = ctx->needs_input_grad(w_input) && ctx->needs_input_grad(w_input + 1) &&
                        grad_in_place(weight, device) && grad_in_place(bias, device);
  if (in_place) return {weight.grad(), bias.grad(), true};
  return {torch::empty_like(weight), torch::empty_like(bias), false};
}

torch::Tensor aten_bn_add_relu(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& weight,
                               const torch::Tensor& bias, const torch::Tensor& running_mean,
                               const torch::Tensor& running_var, double momentum, double eps, bool relu) {
  auto y = torch::nn::functional::detail::batch_norm(x, running_mean, running_var, weight, bias, /*training=*/true,
                                                     momentum, eps);
  if (!relu) return y;
  return torch::relu(z.defined() ? y + z : y);
}

#ifdef EFFTRAIN_WITH_CUDNN

// Set when cuDNN refused the fused operation once: every later call takes ATen's path.
std::atomic<bool> g_refused{false};
struct Refused : std::exception {};  // thrown out of BnAddRelu::forward before anything is enqueued

constexpr auto kMode = CUDNN_BATCHNORM_SPATIAL_PERSISTENT;  // what ATen's cuDNN BatchNorm uses in training

cudnnBatchNormOps_t ops_for(bool add, bool relu) {
  if (!relu) return CUDNN_BATCHNORM_OPS_BN;
  return add ? CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION : CUDNN_BATCHNORM_OPS_BN_ACTIVATION;
}

// The handle on the current stream, and the descriptors one call needs.
struct Call {
  cudnnHandle_t handle;
  at::native::TensorDescriptor data;   // x, y, z, dy, dx, dz: NHWC fp16 or bf16, one shape
  at::native::TensorDescriptor param;  // weight, bias, statistics: [1, C, 1, 1] fp32
  cudnnActivationDescriptor_t act{};

  Call(const torch::Tensor& x, const torch::Tensor& weight) : handle(at::native::getCudnnHandle()) {
    AT_CUDNN_CHECK(cudnnSetStream(handle, c10::cuda::getCurrentCUDAStream()));
    data.set(x, at::MemoryFormat::ChannelsLast, 4);
    param.set(weight.view({1, weight.numel(), 1, 1}), 4);
    AT_CUDNN_CHECK(cudnnCreateActivationDescriptor(&act));
    AT_CUDNN_CHECK(cudnnSetActivationDescriptor(act, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0.0));
  }
  ~Call() { cudnnDestroyActivationDescriptor(act); }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;
};

torch::Tensor bytes(size_t n, const torch::Tensor& like) {
  return torch::empty({static_cast<int64_t>(n)}, like.options().dtype(torch::kByte));
}

struct BnAddRelu : torch::autograd::Function<BnAddRelu> {
  // Throws Refused where cuDNN does not support the operation for these inputs.
  // z and the running statistics are optional: autograd takes no undefined tensor as an input.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const std::optional<torch::Tensor>& z_in,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               const std::optional<torch::Tensor>& running_mean_in,
                               const std::optional<torch::Tensor>& running_var_in, double momentum, double eps,
                               bool relu) {
    const c10::cuda::CUDAGuard guard(x.device());
    const auto [z, running_mean, running_var] = given(z_in, running_mean_in, running_var_in);
    const bool add = z.defined();
    const auto ops = ops_for(add, relu);
    Call c(x, weight);
    const auto act = relu ? c.act : nullptr;  // BatchNorm alone: no activation descriptor
    size_t ws = 0, rs = 0;
    AT_CUDNN_CHECK(cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
        c.handle, kMode, ops, c.data.desc(), add ? c.data.desc() : nullptr, c.data.desc(), c.param.desc(), act, &ws));
    AT_CUDNN_CHECK(cudnnGetBatchNormalizationTrainingExReserveSpaceSize(c.handle, kMode, ops, act, c.data.desc(), &rs));
    auto workspace = bytes(ws, x), reserve = bytes(rs, x);
    auto y = torch::empty_like(x, x.options(), torch::MemoryFormat::ChannelsLast);
    auto mean = torch::empty({weight.numel()}, weight.options());
    auto invstd = torch::empty({weight.numel()}, weight.options());
    const float one = 1.f, zero = 0.f;
    const cudnnStatus_t st = cudnnBatchNormalizationForwardTrainingEx(
        c.handle, kMode, ops, &one, &zero, c.data.desc(), x.data_ptr(), add ? c.data.desc() : nullptr,
        add ? z.data_ptr() : nullptr, c.data.desc(), y.data_ptr(), c.param.desc(), weight.data_ptr(), bias.data_ptr(),
        momentum, running_mean.defined() ? running_mean.data_ptr() : nullptr,
        running_var.defined() ? running_var.data_ptr() : nullptr, eps, mean.data_ptr(), invstd.data_ptr(), act,
        workspace.data_ptr(), ws, reserve.data_ptr(), rs);
    if (st == CUDNN_STATUS_NOT_SUPPORTED || st == CUDNN_STATUS_BAD_PARAM) {
      g_refused = true;
      TORCH_WARN("cuDNN refused the fused BatchNorm + ReLU for ", x.scalar_type(), " ", x.sizes(), " (",
                 cudnnGetErrorString(st), "); ATen's BatchNorm and ReLU run instead");
      throw Refused{};
    }
    AT_CUDNN_CHECK(st);
    // backward reads y only to undo the ReLU: BatchNorm alone keeps none
    ctx->save_for_backward({x, weight, bias, relu ? y : torch::Tensor(), mean, invstd, reserve});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["add"] = add;
    ctx->saved_data["relu"] = relu;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &weight = s[1], &bias = s[2], &y = s[3], &mean = s[4], &invstd = s[5], &reserve = s[6];
    const bool add = ctx->saved_data["add"].toBool(), relu = ctx->saved_data["relu"].toBool();
    const double eps = ctx->saved_data["eps"].toDouble();
    const c10::cuda::CUDAGuard guard(x.device());
    const auto ops = ops_for(add, relu);
    auto dy = grads[0].contiguous(torch::MemoryFormat::ChannelsLast);
    Call c(x, weight);
    const auto act = relu ? c.act : nullptr;
    auto dx = torch::empty_like(x, x.options(), torch::MemoryFormat::ChannelsLast);
    torch::Tensor dz = add ? torch::empty_like(x, x.options(), torch::MemoryFormat::ChannelsLast) : torch::Tensor();
    auto [dweight, dbias, in_place] = param_grads(ctx, add, weight, bias, x.device());  // betaParamDiff 1 in place
    size_t ws = 0;
    AT_CUDNN_CHECK(cudnnGetBatchNormalizationBackwardExWorkspaceSize(
        c.handle, kMode, ops, c.data.desc(), relu ? c.data.desc() : nullptr, c.data.desc(),
        add ? c.data.desc() : nullptr, c.data.desc(), c.param.desc(), act, &ws));
    auto workspace = bytes(ws, x);
    const float one = 1.f, zero = 0.f;
    AT_CUDNN_CHECK(cudnnBatchNormalizationBackwardEx(
        c.handle, kMode, ops, &one, &zero, &one, in_place ? &one : &zero, c.data.desc(), x.data_ptr(), relu ? c.data.desc() : nullptr,
        relu ? y.data_ptr() : nullptr,
        c.data.desc(), dy.data_ptr(), add ? c.data.desc() : nullptr, add ? dz.data_ptr() : nullptr, c.data.desc(),
        dx.data_ptr(), c.param.desc(), weight.data_ptr(), bias.data_ptr(), dweight.data_ptr(), dbias.data_ptr(), eps,
        mean.data_ptr(), invstd.data_ptr(), act, workspace.data_ptr(), ws, reserve.data_ptr(), reserve.numel()));
    if (in_place) dweight = dbias = torch::Tensor();
    return {dx, dz, dweight, dbias, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};
#endif
#ifdef EFFTRAIN_WITH_KERNELS
// The project's kernels (kernels/bn.cu): the same function as BnAddRelu (statistics, running
// averages, gradients), three kernels per direction, no reserve space (the ReLU's mask is
// recomputed from x, or read from y with the add).
// Its outputs: y and the statistics ([4, C]: mean, invstd, scale, shift; not differentiable).
struct EfftrainBn : torch::autograd::Function<EfftrainBn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const std::optional<torch::Tensor>& z_in,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               const std::optional<torch::Tensor>& running_mean_in,
                               const std::optional<torch::Tensor>& running_var_in, double momentum, double eps,
                               bool relu) {
    const c10::cuda::CUDAGuard guard(x.device());
    const auto [z, running_mean, running_var] = given(z_in, running_mean_in, running_var_in);
    const int64_t C = x.size(1), rows = x.numel() / C;
    auto y = torch::empty_like(x, x.options(), torch::MemoryFormat::ChannelsLast);
    const auto f32 = weight.options();
    auto stats = torch::empty({4, C}, f32);  // mean, invstd, scale, shift
    auto partials = torch::empty({bn_partials(rows, C)}, f32);
    auto* st = stats.data_ptr<float>();
    check_launch(bn_forward(dtype_of(x), x.data_ptr(), z.defined() ? z.data_ptr() : nullptr, weight.data_ptr<float>(),
                            bias.data_ptr<float>(), rows, C, relu, static_cast<float>(eps),
                            static_cast<float>(momentum),
                            running_mean.defined() ? running_mean.data_ptr<float>() : nullptr,
                            running_var.defined() ? running_var.data_ptr<float>() : nullptr,
                            partials.data_ptr<float>(), st, st + C, st + 2 * C, st + 3 * C, y.data_ptr(), stream()),
                 "BatchNorm forward");
    ctx->save_for_backward({x, weight, bias, z.defined() ? y : torch::Tensor(), stats});
    ctx->saved_data["add"] = z.defined();
    ctx->saved_data["relu"] = relu;
    ctx->mark_non_differentiable({stats});
    return {y, stats};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &weight = s[1], &bias = s[2], &y = s[3], &stats = s[4];
    const bool add = ctx->saved_data["add"].toBool(), relu = ctx->saved_data["relu"].toBool();
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t C = x.size(1), rows = x.numel() / C;
    auto dy = grads[0].to(x.scalar_type()).contiguous(torch::MemoryFormat::ChannelsLast);
    if (!aligned16(dy)) dy = dy.clone(torch::MemoryFormat::ChannelsLast);  // a view at an odd offset
    auto dx = torch::empty_like(x, x.options(), torch::MemoryFormat::ChannelsLast);
    torch::Tensor dz = add ? torch::empty_like(x, x.options(), torch::MemoryFormat::ChannelsLast) : torch::Tensor();
    auto [dweight, dbias, in_place] = param_grads(ctx, add, weight, bias, x.device());
    auto partials = torch::empty({bn_partials(rows, C)}, stats.options());
    auto coef = torch::empty({2 * C}, stats.options());
    const auto* st = stats.data_ptr<float>();
    check_launch(bn_backward(dtype_of(x), x.data_ptr(), add ? y.data_ptr() : nullptr, dy.data_ptr(), st, st + C,
                             st + 2 * C, st + 3 * C, rows, C, relu, add, partials.data_ptr<float>(),
                             coef.data_ptr<float>(), dweight.data_ptr<float>(), dbias.data_ptr<float>(), in_place,
                             add ? dz.data_ptr() : nullptr, dx.data_ptr(), stream()),
                 "BatchNorm backward");
    if (in_place) dweight = dbias = torch::Tensor();
    return {dx, dz, dweight, dbias, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

#endif
}  // namespace

bool bn_relu_fused(const torch::Tensor& x, const torch::Tensor& z) {
#ifdef EFFTRAIN_WITH_CUDNN
  return !g_refused && same_nhwc_half(x, z) && x.size(1) % 4 == 0 && at::globalContext().userEnabledCuDNN();
#else
  (void)x, (void)z;
  return false;
#endif
}

namespace {
bool efftrain_applies(const torch::Tensor& x, const torch::Tensor& z) {
#ifdef EFFTRAIN_WITH_KERNELS
  const int64_t rows = x.numel() / std::max<int64_t>(x.size(1), 1);
  return same_nhwc_half(x, z) && bn_channels_supported(x.size(1)) && rows > 1 && rows < (int64_t{1} << 24) &&
         aligned16(x) && (!z.defined() || aligned16(z));
#else
  (void)x, (void)z;
  return false;
#endif
}
}  // namespace

std::string bn_kernel_name(BnKernels k, const torch::Tensor& x, const torch::Tensor& z) {
  if (k == BnKernels::efftrain && efftrain_applies(x, z)) return "efftrain_fused";
  if (k != BnKernels::aten && bn_relu_fused(x, z)) return "cudnn_fused";
  return "aten";
}

namespace {
torch::Tensor bn_act(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& weight,
                     const torch::Tensor& bias, const torch::Tensor& running_mean, const torch::Tensor& running_var,
                     double momentum, double eps, BnKernels k, bool relu, BnReluSource* source = nullptr) {
  const auto param = [&](const torch::Tensor& t) {
    return !t.defined() || (t.scalar_type() == torch::kFloat && t.is_contiguous() && t.numel() == x.size(1) &&
                            t.device() == x.device());
  };
  const bool params = weight.defined() && bias.defined() && param(weight) && param(bias) && param(running_mean) &&
                      param(running_var) && running_mean.defined() == running_var.defined();
  [[maybe_unused]] const auto opt = [](const torch::Tensor& t) {
    return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt;
  };
#ifdef EFFTRAIN_WITH_KERNELS
  if (k == BnKernels::efftrain && params && efftrain_applies(x, z)) {
    auto out = EfftrainBn::apply(x, opt(z), weight, bias, opt(running_mean), opt(running_var), momentum, eps, relu);
    if (source) *source = {x.detach(), out[1]};
    return out[0];
  }
#endif
#ifdef EFFTRAIN_WITH_CUDNN
  if (k != BnKernels::aten && params && bn_relu_fused(x, z) && eps >= CUDNN_BN_MIN_EPSILON) {
    try {
      return BnAddRelu::apply(x, opt(z), weight, bias, opt(running_mean), opt(running_var), momentum, eps, relu);
    } catch (const Refused&) {
    }
  }
#endif
  (void)params, (void)k;
  return aten_bn_add_relu(x, z, weight, bias, running_mean, running_var, momentum, eps, relu);
}
}  // namespace

torch::Tensor bn_add_relu(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& weight,
                          const torch::Tensor& bias, const torch::Tensor& running_mean,
                          const torch::Tensor& running_var, double momentum, double eps, BnKernels k) {
  return bn_act(x, z, weight, bias, running_mean, running_var, momentum, eps, k, true);
}

std::pair<torch::Tensor, BnReluSource> bn_relu_remakable(const torch::Tensor& x, const torch::Tensor& weight,
                                                         const torch::Tensor& bias, const torch::Tensor& running_mean,
                                                         const torch::Tensor& running_var, double momentum,
                                                         double eps, BnKernels k) {
  BnReluSource src;
  auto y = bn_act(x, {}, weight, bias, running_mean, running_var, momentum, eps, k, true, &src);
  if (!torch::GradMode::is_enabled()) src = {};  // nothing keeps y for a backward
  return {y, src};
}

torch::Tensor remake_bn_relu(const BnReluSource& src) {
  TORCH_CHECK(src, "remake_bn_relu: no source");
#ifdef EFFTRAIN_WITH_KERNELS
  const auto& x = src.x;
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t C = x.size(1);
  auto y = torch::empty_like(x, x.options(), torch::MemoryFormat::ChannelsLast);
  const auto* st = src.stats.data_ptr<float>();
  check_launch(bn_relu_remake(dtype_of(x), x.data_ptr(), st + 2 * C, st + 3 * C, x.numel() / C, C, y.data_ptr(),
                              stream()),
               "BatchNorm + ReLU remake");
  return y;
#else
  TORCH_CHECK(false, "remake_bn_relu: a build without the project's CUDA kernels makes no source");
#endif
}

torch::Tensor bn(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                 const torch::Tensor& running_mean, const torch::Tensor& running_var, double momentum, double eps,
                 BnKernels k) {
  return bn_act(x, {}, weight, bias, running_mean, running_var, momentum, eps, k, false);
}

}  // namespace efftrain::kernels

// Every config key, its type, default, limits and meaning: one list per section (visit_*),
// walked by three visitors: Reader (YAML tree -> structs, with validation), JsonWriter
// (structs -> resolved JSON/YAML) and DocWriter (the Markdown reference).
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include "efftrain/config/config.h"
#include "efftrain/config/tree.h"
#include "efftrain/core/error.h"
#include "efftrain/core/registry.h"
#include "efftrain/core/util.h"

namespace efftrain::config {

namespace {

struct Limits {
  std::optional<double> min, max;
  bool min_exclusive = false;
  std::string describe() const {
    std::ostringstream s;
    auto num = [](double v) {
      std::ostringstream o;
      o << v;
      return o.str();
    };
    if (min && max) s << " in [" << num(*min) << ", " << num(*max) << "]";
    else if (min) s << (min_exclusive ? " > " : " >= ") << num(*min);
    else if (max) s << " <= " << num(*max);
    return s.str();
  }
  bool ok(double v) const {
    if (min && (min_exclusive ? !(v > *min) : !(v >= *min))) return false;
    if (max && !(v <= *max)) return false;
    return true;
  }
};
Limits at_least(double v) { return Limits{v, std::nullopt, false}; }
Limits positive() { return Limits{0.0, std::nullopt, true}; }
Limits between(double a, double b) { return Limits{a, b, false}; }

template <class T> struct TypeName;
template <> struct TypeName<int64_t> { static constexpr const char* v = "an integer"; };
template <> struct TypeName<uint64_t> { static constexpr const char* v = "a non-negative integer"; };
template <> struct TypeName<double> { static constexpr const char* v = "a number"; };
template <> struct TypeName<bool> { static constexpr const char* v = "true or false"; };
template <> struct TypeName<std::string> { static constexpr const char* v = "a string"; };
template <> struct TypeName<std::optional<double>> { static constexpr const char* v = "a number or null"; };
template <> struct TypeName<std::vector<double>> { static constexpr const char* v = "a list of numbers"; };
template <> struct TypeName<std::vector<int64_t>> { static constexpr const char* v = "a list of integers"; };

bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t j = i; j < s.size(); ++j)
    if (s[j] < '0' || s[j] > '9') return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno == ERANGE || *end != '\0') return false;
  out = v;
  return true;
}

bool parse_double(const std::string& s, double& out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (errno == ERANGE || *end != '\0' || !std::isfinite(v)) return false;
  // strtod accepts hex floats and "nan"/"inf": the finiteness check and this keep YAML's plain numbers.
  if (s.find_first_of("xXnN") != std::string::npos) return false;
  out = v;
  return true;
}

// ---------------------------------------------------------------------------------------------
class Reader {
 public:
  Reader(const Node* node, std::string path, Source where, std::map<std::string, Source>* sources)
      : node_(node), path_(std::move(path)), where_(std::move(where)), sources_(sources) {
    if (node_ && node_->kind == Node::Kind::Null) node_ = nullptr;
    if (node_ && !node_->is_map())
      fail(node_->src, path_, std::string("expected a map of settings, found ") + node_->describe());
  }

  template <class T>
  void field(const char* key, T& value, const char* /*doc*/, Limits lim = {}) {
    const Node* n = take(key);
    if (!n) return;
    parse(*n, full(key), value, lim);
  }

  void required(const char* key, std::string& value, const char* /*doc*/) {
    const Node* n = take(key);
    if (!n || n->kind == Node::Kind::Null)
      fail(n ? n->src : where_, full(key), "required key is missing (expected a string)");
    parse(*n, full(key), value, {});
    if (value.empty()) fail(n->src, full(key), "expected a non-empty string, found ''");
  }

  void one_of(const char* key, std::string& value, std::vector<std::string> options,
              const char* /*doc*/) {
    const Node* n = take(key);
    if (!n) return;
    parse(*n, full(key), value, {});
    check_choice(*n, full(key), value, options);
  }

  void component(const char* key, std::string& value, const char* kind, const char* /*doc*/,
                 bool is_required = false) {
    const Node* n = take(key);
    if (!n || n->kind == Node::Kind::Null) {
      if (is_required)
        fail(n ? n->src : where_, full(key),
             "required key is missing (expected one of: " + join(catalog::names(kind), ", ") + ")");
      return;
    }
    parse(*n, full(key), value, {});
    check_choice(*n, full(key), value, catalog::names(kind));
  }

  template <class S>
  void section(const char* key, S& s, const char* /*doc*/) {
    const Node* n = take(key);
    Reader sub(n, full(key), n ? n->src : where_, sources_);
    visit(sub, s);
    sub.finish();
  }

  void finish() {
    if (!node_) return;
    std::vector<std::string> known(seen_.begin(), seen_.end());
    for (const auto& kv : node_->map) {
      if (seen_.count(kv.first)) continue;
      std::string msg = "unknown key";
      const std::string guess = closest_match(kv.first, known);
      if (!guess.empty()) msg += "; did you mean '" + guess + "'?";
      msg += " (expected one of: " + join(order_, ", ") + ")";
      fail(kv.second.src, full(kv.first.c_str()), msg);
    }
  }

 private:
  const Node* take(const char* key) {
    seen_.insert(key);
    order_.push_back(key);
    const Node* n = node_ ? node_->find(key) : nullptr;
    if (n && sources_) (*sources_)[full(key)] = n->src;
    return n;
  }
  std::string full(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  [[noreturn]] static void fail(const Source& src, const std::string& path, const std::string& msg) {
    throw UserError(src.str() + ": " + path + ": " + msg);
  }
  template <class T>
  [[noreturn]] static void wrong_type(const Node& n, const std::string& path, const Limits& lim) {
    std::string found = n.describe();
    if (n.quoted) found += " (a quoted string)";
    fail(n.src, path, std::string("expected ") + TypeName<T>::v + lim.describe() + ", found " + found);
  }

  static void check_choice(const Node& n, const std::string& path, const std::string& value,
                           const std::vector<std::string>& options) {
    for (const auto& o : options)
      if (o == value) return;
    std::string msg = "expected one of " + join(options, ", ") + ", found '" + value + "'";
    const std::string guess = closest_match(value, options);
    if (!guess.empty()) msg += "; did you mean '" + guess + "'?";
    fail(n.src, path, msg);
  }

  static void parse(const Node& n, const std::string& path, int64_t& v, const Limits& lim) {
    int64_t x;
    if (n.kind != Node::Kind::Scalar || n.quoted || !parse_int(n.scalar, x) ||
        !lim.ok(static_cast<double>(x)))
      wrong_type<int64_t>(n, path, lim);
    v = x;
  }
  static void parse(const Node& n, const std::string& path, uint64_t& v, const Limits& lim) {
    int64_t x;
    if (n.kind != Node::Kind::Scalar || n.quoted || !parse_int(n.scalar, x) || x < 0)
      wrong_type<uint64_t>(n, path, lim);
    v = static_cast<uint64_t>(x);
  }
  static void parse(const Node& n, const std::string& path, double& v, const Limits& lim) {
    double x;
    if (n.kind != Node::Kind::Scalar || n.quoted || !parse_double(n.scalar, x) || !lim.ok(x))
      wrong_type<double>(n, path, lim);
    v = x;
  }
  static void parse(const Node& n, const std::string& path, bool& v, const Limits& lim) {
    if (n.kind == Node::Kind::Scalar && !n.quoted && n.scalar == "true") v = true;
    else if (n.kind == Node::Kind::Scalar && !n.quoted && n.scalar == "false") v = false;
    else wrong_type<bool>(n, path, lim);
  }
  static void parse(const Node& n, const std::string& path, std::string& v, const Limits& lim) {
    if (n.kind == Node::Kind::Null) {
      v.clear();
      return;
    }
    if (n.kind != Node::Kind::Scalar) wrong_type<std::string>(n, path, lim);
    v = n.scalar;
  }
  static void parse(const Node& n, const std::string& path, std::optional<double>& v,
                    const Limits& lim) {
    if (n.kind == Node::Kind::Null || (n.kind == Node::Kind::Scalar && !n.quoted &&
                                       (n.scalar == "null" || n.scalar == "~"))) {
      v.reset();
      return;
    }
    double x;
    if (n.kind != Node::Kind::Scalar || n.quoted || !parse_double(n.scalar, x) || !lim.ok(x))
      wrong_type<std::optional<double>>(n, path, lim);
    v = x;
  }
  template <class T>
  static void parse_list(const Node& n, const std::string& path, std::vector<T>& v, const Limits& lim,
                         bool allow_empty) {
    if (n.kind != Node::Kind::Seq || (!allow_empty && n.seq.empty())) wrong_type<std::vector<T>>(n, path, lim);
    std::vector<T> out;
    for (size_t i = 0; i < n.seq.size(); ++i) {
      T x;
      parse(n.seq[i], path + "[" + std::to_string(i) + "]", x, lim);
      out.push_back(x);
    }
    v = out;
  }
  // An empty betas list is reported by check_consistency (it wants exactly two).
  static void parse(const Node& n, const std::string& path, std::vector<double>& v, const Limits& lim) {
    parse_list(n, path, v, lim, /*allow_empty=*/true);
  }
  static void parse(const Node& n, const std::string& path, std::vector<int64_t>& v, const Limits& lim) {
    parse_list(n, path, v, lim, /*allow_empty=*/false);
  }

  const Node* node_;
  std::string path_;
  Source where_;
  std::map<std::string, Source>* sources_;
  std::set<std::string> seen_;
  std::vector<std::string> order_;
};

// ---------------------------------------------------------------------------------------------
class JsonWriter {
 public:
  explicit JsonWriter(nlohmann::json& out) : out_(out) { out_ = nlohmann::json::object(); }
  template <class T>
  void field(const char* key, const T& v, const char*, Limits = {}) { out_[key] = v; }
  void field(const char* key, const std::optional<double>& v, const char*, Limits = {}) {
    out_[key] = v ? nlohmann::json(*v) : nlohmann::json(nullptr);
  }
  void required(const char* key, const std::string& v, const char*) { out_[key] = v; }
  void one_of(const char* key, const std::string& v, std::vector<std::string>, const char*) {
    out_[key] = v;
  }
  void component(const char* key, const std::string& v, const char*, const char*, bool = false) {
    out_[key] = v;
  }
  template <class S>
  void section(const char* key, S& s, const char*) {
    nlohmann::json sub;
    JsonWriter w(sub);
    visit(w, s);
    out_[key] = sub;
  }

 private:
  nlohmann::json& out_;
};

// ---------------------------------------------------------------------------------------------
class DocWriter {
 public:
  DocWriter(std::ostringstream& out, std::string path) : out_(out), path_(std::move(path)) {}
  template <class T>
  void field(const char* key, T& v, const char* doc, Limits lim = {}) {
    nlohmann::json j;
    JsonValue(j, v);
    row(key, std::string(TypeName<T>::v) + lim.describe(), j.dump(), doc);
  }
  void required(const char* key, std::string&, const char* doc) {
    row(key, "a string (required)", "", doc);
  }
  void one_of(const char* key, std::string& v, std::vector<std::string> options, const char* doc) {
    row(key, "one of " + join(options, ", "), "\"" + v + "\"", doc);
  }
  void component(const char* key, std::string& v, const char* kind, const char* doc,
                 bool is_required = false) {
    row(key, std::string("a registered ") + kind + " (" + join(catalog::names(kind), ", ") + ")" +
                 (is_required ? " (required)" : ""),
        v.empty() ? "" : "\"" + v + "\"", doc);
  }
  template <class S>
  void section(const char* key, S& s, const char* doc) {
    out_ << "| `" << full(key) << "` | section | | " << doc << " |\n";
    DocWriter sub(out_, full(key));
    visit(sub, s);
  }

 private:
  template <class T> static void JsonValue(nlohmann::json& j, const T& v) { j = v; }
  static void JsonValue(nlohmann::json& j, const std::optional<double>& v) {
    j = v ? nlohmann::json(*v) : nlohmann::json(nullptr);
  }
  std::string full(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  void row(const char* key, const std::string& type, const std::string& def, const char* doc) {
    out_ << "| `" << full(key) << "` | " << type << " | `" << def << "` | " << doc << " |\n";
  }
  std::ostringstream& out_;
  std::string path_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// The schema. Field order here is the order of the resolved config.

template <class V> void visit(V& v, DataConfig& c) {
  v.field("root", c.root, "Folder holding the dataset files (real datasets).");
  v.field("synthetic", c.synthetic, "Real-data tasks: train on the synthetic set of the same shape instead (no files needed).");
  v.field("train_samples", c.train_samples, "Synthetic sets: examples in the training split.", at_least(1));
  v.field("eval_samples", c.eval_samples, "Synthetic sets: examples in the evaluation split.", at_least(1));
  v.field("eval_limit", c.eval_limit, "Evaluate on the first N examples only (quick CPU runs); 0 = the whole split.", at_least(0));
  v.field("image_size", c.image_size, "Synthetic images: height and width in pixels.", between(4, 4096));
  v.field("channels", c.channels, "Image channels.", between(1, 64));
  v.field("classes", c.classes, "Number of classes.", between(2, 100000));
  v.field("noise", c.noise, "Synthetic images: standard deviation of the per-pixel noise.", at_least(0));
  v.field("augment", c.augment, "Training augmentation (random crop and flip) where the task has it.");
  v.one_of("input_path", c.input_path, {"host", "device", "fixed"},
           "host: loader threads + pinned memory + non-blocking copies; device: the whole dataset on the "
           "device, augmentation there; fixed: one random batch on the device reused every step (model only).");
  v.field("workers", c.workers, "Host loader threads; 0 = prepare batches on the training thread.", between(0, 256));
  v.field("prefetch", c.prefetch, "Host loader: batches prepared ahead.", between(1, 1024));
  v.field("pin_memory", c.pin_memory, "Host loader: page-locked batches for asynchronous copies (CUDA).");
  v.field("seq_len", c.seq_len, "Language tasks: tokens per training sequence.", at_least(2));
  v.field("vocab_dir", c.vocab_dir, "Language tasks: folder with GPT-2 vocab.json + merges.txt; empty = <root>/gpt2.");
  v.field("cache_dir", c.cache_dir, "Token caches; empty = $EFFTRAIN_CACHE/tokens (default ~/.cache/efftrain/tokens).");
  v.one_of("train_split", c.train_split, {"train", "valid", "test"}, "Language tasks: the split trained on.");
  v.one_of("eval_split", c.eval_split, {"train", "valid", "test"}, "Language tasks: the split perplexity is measured on.");
}

template <class V> void visit(V& v, ModelConfig& c) {
  v.field("width", c.width, "Channels of the first stage (CNNs) or embedding width (GPT).", at_least(1));
  v.field("depth", c.depth, "Number of stages, blocks or layers (task-specific).", at_least(1));
  v.field("blocks", c.blocks, "ResNet (task cifar10_resnet): bottleneck blocks per stage.", at_least(1));
  v.field("heads", c.heads, "Attention heads (GPT).", at_least(1));
  v.field("vocab", c.vocab, "Vocabulary size (GPT); 0 = the tokenizer's.", at_least(0));
  v.field("vocab_multiple", c.vocab_multiple,
          "GPT: pad the embedding/classifier rows up to a multiple of this (64 or 128 keep the classifier's matrix "
          "products on fast tensor-core kernels). The padding is masked out of the softmax (logit -inf) and stays "
          "zero, so the model computes what the unpadded one does; the report gives both parameter counts.",
          between(1, 4096));
  v.field("fused_loss", c.fused_loss,
          "GPT: the loss through the project's CUDA kernels on the logits' own dtype (no fp32 copy). In training "
          "the classifier runs head_chunk_rows rows at a time and its gradients are taken in forward: one kernel "
          "reads each chunk's logits once, writes the loss and the gradient over them, and the chunk's matmuls "
          "for dx and dW follow, so the full logits are never held. Same function as ATen's cross_entropy; on the "
          "CPU, or in a build without nvcc, ATen runs (the report's model.loss_kernel says which).");
  v.field("head_chunk_rows", c.head_chunk_rows,
          "GPT: classifier rows (tokens) per chunk in training with fused_loss or selective checkpointing; 0 = "
          "2048 under selective (memory first), else 16384 (fewer, larger matmuls).",
          at_least(0));
  v.field("fused_norm", c.fused_norm,
          "GPT: each residual add, its dropout and the LayerNorm after it in one CUDA kernel per direction (fp32 "
          "stream, width a multiple of 128 up to 2048; the LayerNorm output in the autocast dtype; the dropout mask "
          "drawn again in backward, not stored). Same function as the ATen ops, which run elsewhere (the report's "
          "model.norm_kernel says which).");
  v.field("fused_gelu", c.fused_gelu,
          "GPT: the MLP's first matmul adds its bias and applies GELU in cuBLASLt's epilogue (GELU_AUX_BIAS: the "
          "GELU input is written beside the output for backward), so no separate GELU kernel runs forward; "
          "backward computes GELU's derivative and c_fc's bias gradient in one pass of the project's kernel (in bf16 "
          "with the hardware's tanh approximation, whose error is below bf16's rounding). "
          "Applies on CUDA with fp16 or bf16 activations and widths a multiple of 8; elsewhere ATen's linear and "
          "GELU run, the same function (the report's model.gelu_kernel says which). The epilogue applies GELU "
          "before rounding to fp16/bf16, ATen after, so the two differ by rounding.");
  v.one_of("matmul", c.matmul, {"aten", "cublaslt", "tuned"},
           "GPT: whose matrix products run the linear layers (forward and backward) and the classifier. aten: "
           "ATen's (cuBLAS picks the kernel, as in PyTorch). cublaslt: the project's cuBLASLt call with its "
           "heuristic's first algorithm for each shape. tuned: the fastest of the heuristic's first 16 algorithms, "
           "each timed once per shape the first time it runs (in the first step, before train.cuda_graph's capture; "
           "a candidate replaces the heuristic's first only when more than 2% faster); the choice follows the "
           "card's timing, so two runs may take different kernels for a shape whose candidates time alike and "
           "round differently. The same products in every mode. Applies on CUDA in fp16/bf16 with aligned operands "
           "(leading dimensions multiples of 8); elsewhere ATen's ops. The report's model.matmul_tuning says what "
           "tuning found.");
  v.field("context", c.context, "Context length (GPT).", at_least(1));
  v.field("dropout", c.dropout, "Dropout probability in training.", between(0, 1));
  v.field("channels_last", c.channels_last, "channels_last memory format (CNNs).");
  v.field("fused_bn_relu", c.fused_bn_relu,
          "ResNet: each BatchNorm followed by a ReLU (the bottleneck's last one with the residual add before it) "
          "fused: with bn_kernels cudnn one cuDNN kernel per direction (BatchNorm with bnOps BN_ACTIVATION / "
          "BN_ADD_ACTIVATION), and the downsample shortcuts' BatchNorm (no ReLU) through the same cuDNN call with "
          "bnOps BN; with bn_kernels efftrain the project's kernels (below). Applies "
          "in training on CUDA with fp16 or bf16 activations in channels_last; elsewhere (fp32, CPU, eval) "
          "ATen's BatchNorm, add and ReLU run, the same function (the report's model.bn_kernel says which ran "
          "the stem's; the blocks take the same path wherever their channels allow: see bn_kernels).");
  v.one_of("bn_kernels", c.bn_kernels, {"cudnn", "efftrain"},
           "ResNet with fused_bn_relu: whose kernels run the fused BatchNorms. cudnn: cuDNN's (above). efftrain: "
           "the project's (kernels/bn.cu; three kernels per direction -- the statistics, their sums, the "
           "element-wise pass -- and no reserve space), where the channels are a power of two from 8 to 2048; "
           "elsewhere cuDNN's. The same function either way (report: model.bn_kernel).");
  v.field("conv_grads_in_place", c.conv_grads_in_place,
          "ResNet: the convolutions' weights cast to fp16/bf16 by one kernel per forward (autocast casts each "
          "weight in a kernel of its own), each weight gradient added into the fp32 .grad by one kernel (not cast "
          "by one and added by another), and the bottlenecks' 1x1 convolutions' backward as matrix products, the "
          "first one's input gradient added by its product into the shortcut's (not by a separate add). Applies in "
          "training on CUDA under fp16 or bf16 autocast, meant with channels_last; elsewhere ATen's convolutions "
          "run, the same function (the 1x1 backward sums in another order; the report's model.conv_grads says "
          "which ran the stem's convolution: in_place or autograd).");
  v.field("recompute_bn_relu", c.recompute_bn_relu,
          "ResNet with fused_bn_relu, bn_kernels efftrain and conv_grads_in_place: the convolutions after a "
          "BatchNorm + ReLU without the residual add (each bottleneck's 3x3 and last 1x1, the first bottleneck's "
          "1x1 and shortcut after the stem) keep, for their weight gradients, the BatchNorm's input and statistics "
          "(which the BatchNorm's backward holds anyway) instead of its output, and remake that output in "
          "backward by one element-wise kernel: the same bits, without holding those outputs from forward to "
          "backward, for one more pass over them. Where the project's kernels do not run (fp32, CPU, eval), "
          "nothing changes (report: model.bn_relu_remade, the outputs remade per step).");
  v.one_of("norm", c.norm, {"batch", "none"}, "Small CNN: BatchNorm after each convolution, or none (multi-process exactness tests).");
  v.field("zero_init_residual", c.zero_init_residual, "Zero-init the last BN gamma of each residual block.");
  v.one_of("attention", c.attention, {"plain", "sdpa"},
           "plain: materialized masked softmax; sdpa: scaled_dot_product_attention.");
  v.one_of("sdpa_backend", c.sdpa_backend, {"auto", "cudnn", "flash", "efficient", "math"},
           "attention sdpa: the only backend scaled_dot_product_attention may use in this process (what PyTorch's "
           "sdpa_kernel context does); auto: PyTorch's choice among all of them. A backend that cannot run the "
           "inputs is an error. The report's model.attention_kernel says which ran.");
}

template <class V> void visit(V& v, TaskConfig& c) {
  v.component("name", c.name, "task", "The task: model + data + loss + metric.", /*required=*/true);
  v.section("data", c.data, "Dataset settings.");
  v.section("model", c.model, "Model settings.");
}

template <class V> void visit(V& v, TrainConfig& c) {
  v.field("batch_size", c.batch_size, "Micro-batch size per rank (samples or sequences).", at_least(1));
  v.field("max_steps", c.max_steps, "Stop after this many optimizer steps; 0 = no step limit.", at_least(0));
  v.field("max_time_s", c.max_time_s, "Stop after this much training time (s); 0 = no limit.", at_least(0));
  v.field("eval_every", c.eval_every, "Optimizer steps between evaluations; 0 = only at the end.", at_least(0));
  v.field("eval_every_samples", c.eval_every_samples,
          "When > 0, evaluate at the first optimizer step that completes each further this many training samples "
          "(all ranks together) instead of every eval_every steps: the same cadence in data whatever the "
          "accumulation's k.",
          at_least(0));
  v.field("target", c.target, "Quality target in the task's metric (accuracy, perplexity); null = none.");
  v.field("stop_at_target", c.stop_at_target, "Stop at the first evaluation that meets the target.");
  v.field("require_target", c.require_target, "Fail (exit 3) when the target was not reached.");
  v.field("seed", c.seed, "Seed for initialization, data order and augmentation.");
  v.field("timing_warmup_steps", c.timing_warmup_steps, "Steps left out of the throughput figures.", at_least(0));
  v.field("timing_restart_on_k_change", c.timing_restart_on_k_change,
          "Start the throughput window again after each step where accumulation's k changed (once the warm-up is "
          "over; not on the last step), so that the figure holds one k: what scaling comparisons need when adaptive "
          "k settles late. The report counts the restarts (throughput.window_restarts).");
  v.field("cuda_graph", c.cuda_graph,
          "Capture one micro-batch's forward and backward as a CUDA graph and replay it (static shapes); falls back to "
          "eager steps, with the reason in the log and the report, where the run cannot be captured.");
  v.field("deterministic", c.deterministic,
          "cuDNN picks deterministic convolution algorithms and does no autotuning (slower; runs repeat bit for bit where "
          "the other kernels allow).");
  v.field("profile_start_step", c.profile_start_step,
          "Profile optimizer steps from this one (CPU ops and CUDA kernels, LibTorch's Kineto profiler) into "
          "OUT/profile/trace.rank<r>.json, a Chrome trace with each step's phases named (scripts/profile_summary.py "
          "tabulates its kernels, scripts/trace_phases.py its phases and idle time); 0 = off. The "
          "profiled steps run slower and count in the throughput: start after timing_warmup_steps in a run of its own.",
          at_least(0));
  v.field("profile_steps", c.profile_steps, "Optimizer steps profiled from profile_start_step.", at_least(1));
  v.field("memory_snapshot_steps", c.memory_snapshot_steps,
          "Record the CUDA caching allocator's history -- every allocation and free with its C++ stack, from "
          "before the model is built -- through this many optimizer steps and save it to "
          "OUT/memory_snapshot.rank<r>.pickle, the file PyTorch's memory tools read (pytorch.org/memory_viz; "
          "scripts/memory_summary.py lists what is live at the peak). 0 = off; CUDA only. The recorded steps run "
          "slower: use a run of its own.",
          at_least(0));
  v.field("init_from", c.init_from,
          "Checkpoint folder (or a run folder: its newest checkpoint) to start from: its model and this rank's optimizer state; the "
          "world size must match. Step count, schedule and data order start over.");
}

template <class V> void visit(V& v, OptimConfig& c) {
  v.component("name", c.name, "optimizer", "The optimizer.");
  v.field("lr", c.lr, "Peak learning rate.", positive());
  v.field("betas", c.betas, "Adam betas [beta1, beta2], each in [0, 1).", between(0, 0.999999999));
  v.field("eps", c.eps, "Adam epsilon.", positive());
  v.field("weight_decay", c.weight_decay, "Decoupled weight decay.", at_least(0));
  v.field("grad_clip", c.grad_clip, "Clip the global gradient norm to this; 0 = off.", at_least(0));
}

template <class V> void visit(V& v, ScheduleConfig& c) {
  v.component("name", c.name, "schedule", "The learning-rate schedule.");
  v.one_of("unit", c.unit, {"steps", "samples"}, "What warmup and total count.");
  v.field("warmup", c.warmup, "Linear warmup length, in `unit`.", at_least(0));
  v.field("warmup_start_factor", c.warmup_start_factor, "Warmup starts at this fraction of lr.", between(0, 1));
  v.field("total", c.total, "Schedule length in `unit`; 0 = train.max_steps (steps).", at_least(0));
  v.field("min_lr", c.min_lr, "Learning rate at the end of the cosine.", at_least(0));
}

template <class V> void visit(V& v, PrecisionConfig& c) {
  v.component("mode", c.mode, "precision", "Numeric precision of the forward/backward pass.");
  v.field("tf32", c.tf32, "Allow TF32 matmuls and convolutions (CUDA).");
  v.field("initial_scale_power", c.initial_scale_power, "fp16: initial loss scale = 2^this.", between(0, 40));
  v.field("loss_scale_window", c.loss_scale_window, "fp16: clean steps before the scale doubles.", at_least(1));
  v.field("hysteresis", c.hysteresis, "fp16: overflows tolerated before the scale halves.", at_least(1));
  v.field("min_loss_scale", c.min_loss_scale, "fp16: the scale never goes below this.", positive());
  v.field("max_overflows_at_min_scale", c.max_overflows_at_min_scale,
          "fp16: consecutive overflows at the minimum scale before the run stops as diverged.", at_least(1));
}

template <class V> void visit(V& v, AccumulationConfig& c) {
  v.component("mode", c.mode, "accumulation", "How many micro-batches make one optimizer step.");
  v.field("k", c.k, "fixed: micro-batches per optimizer step; adaptive: the starting k.", at_least(1));
  v.field("k_min", c.k_min, "adaptive: smallest k.", at_least(1));
  v.field("k_max", c.k_max, "adaptive: largest k.", at_least(1));
  v.field("interval", c.interval, "adaptive: optimizer steps between decisions on k.", at_least(1));
  v.field("factor", c.factor, "adaptive: target global batch = factor x the gradient noise scale B_noise.", positive());
  v.field("ema", c.ema, "adaptive: EMA coefficient for |G|^2 and tr(Sigma) (bias-corrected).", between(0, 0.9999));
  v.field("hysteresis", c.hysteresis, "adaptive: k changes only when the target batch is outside this relative band.", at_least(0));
  v.one_of("lr_response", c.lr_response, {"none", "sqrt", "linear", "adascale"},
           "adaptive: learning-rate response to the batch change (x1, sqrt(S), S, or AdaScale's gain).");
}

template <class V> void visit(V& v, CheckpointingConfig& c) {
  v.component("policy", c.policy, "checkpointing", "Which model segments are recomputed in backward.");
  v.field("every", c.every, "policy every: blocks per checkpointed segment.", at_least(0));
  v.field("budget_bytes", c.budget_bytes,
          "policy budget: activation memory budget in bytes (measured per block on the CUDA allocator).", at_least(0));
}

template <class V> void visit(V& v, PolicyConfig& c) {
  v.one_of("mode", c.mode, {"none", "auto"},
           "auto: after `observe_steps` steps, switch off what costs more than it brings (activation checkpointing "
           "when the measured peak would fit the budget without it); each decision, with its numbers, goes to the log "
           "and to optimizations.policy.");
  v.field("memory_budget_bytes", c.memory_budget_bytes,
          "Memory the run may use (allocated bytes); 0 = the device's memory on CUDA, no limit on the CPU.", at_least(0));
  v.field("headroom", c.headroom, "Fraction of the budget kept free when deciding.", between(0, 0.9));
  v.field("observe_steps", c.observe_steps, "Optimizer steps measured before the decisions.", at_least(1));
}

template <class V> void visit(V& v, DistributedConfig& c) {
  v.field("world_size", c.world_size, "Number of processes (one per GPU).", between(1, 4096));
  v.one_of("backend", c.backend, {"auto", "nccl", "gloo"}, "Collective backend; auto = nccl on CUDA, gloo on CPU.");
  v.component("grad_sync", c.grad_sync, "grad_sync", "Gradient communication across ranks.");
  v.one_of("auto_sync", c.auto_sync, {"ddp", "zero2"},
           "What grad_sync auto uses with several processes (one process: none).");
  v.field("bucket_mb", c.bucket_mb, "Gradient bucket size in MiB (ddp, zero2).", positive());
  v.one_of("comm_dtype", c.comm_dtype, {"fp32", "bf16", "fp16"},
           "Dtype of ddp's and zero2's gradient collectives (DeepSpeed's communication_data_type, PyTorch DDP's "
           "bf16/fp16 compress hooks): fp32 sends the gradients as they are; bf16 or fp16 halves the bytes: each "
           "bucket, already divided by the world size, is cast, summed across ranks in that dtype and cast back, so "
           "the averaged gradient is rounded (multi-process runs are then no longer exact against one process). "
           "zero2's all-gather of the updated parameters stays fp32.");
  v.field("overlap_comm", c.overlap_comm,
          "ddp and zero2 (DeepSpeed's overlap_comm): true sends each gradient bucket as soon as backward has "
          "filled it, so the collectives overlap the rest of backward (with train.cuda_graph they are captured in "
          "the last micro-batch's graph); false sends every bucket after backward, one after another. The "
          "gradients are the same either way.");
  v.field("gradient_as_bucket_view", c.gradient_as_bucket_view,
          "ddp and zero2 in eager steps (PyTorch DDP's gradient_as_bucket_view): each parameter's .grad is a view "
          "of its slot in a persistent gradient bucket, so backward accumulates straight into the buckets and no "
          "gradient is copied into them; zero2 then keeps its full-size buckets between steps (more memory "
          "outside backward). train.cuda_graph always works this way.");
  v.field("timeout_s", c.timeout_s,
          "Seconds the rendezvous waits for every worker, and the timeout of each collective.", positive());
  v.field("stop_grace_s", c.stop_grace_s,
          "Launcher: seconds between SIGTERM and SIGKILL when it stops the workers after a failure.", at_least(0));
  v.field("bind_cpus", c.bind_cpus,
          "Launcher: pin worker r to the r-th of world_size contiguous shares of the CPUs it may use "
          "(sched_setaffinity), so launch-bound workers do not share cores.");
}

template <class V> void visit(V& v, OutputConfig& c) {
  v.field("dir", c.dir, "Output folder; empty = runs/<name>-<UTC timestamp>.");
  v.field("log_every", c.log_every, "Optimizer steps between progress lines and metrics.jsonl rows.", at_least(1));
  v.field("peak_tflops", c.peak_tflops, "Dense peak TFLOP/s for MFU; 0 = the built-in device table.", at_least(0));
  v.field("save_model", c.save_model,
          "Write model.pt: the final parameters and buffers by name (torch::serialize archive, CPU tensors).");
  v.field("save_checkpoint", c.save_checkpoint,
          "Write a checkpoint at the end of training (checkpoints/step-<N>/: model.pt, per rank the optimizer state "
          "and the resume state, manifest.json with SHA-256 of every file).");
  v.field("checkpoint_every_steps", c.checkpoint_every_steps,
          "Also write a checkpoint every this many optimizer steps; 0 = never.", at_least(0));
  v.field("checkpoint_every_min", c.checkpoint_every_min,
          "Also write a checkpoint every this many minutes of the training loop (checked where the loop reads the "
          "clock: every 10 steps, at each log and evaluation and at the end of the timing warm-up); 0 = never.",
          at_least(0));
  v.field("keep_checkpoints", c.keep_checkpoints,
          "Keep the newest this many checkpoints (older ones are deleted after a new one is complete); 0 = all.",
          at_least(0));
}

template <class V> void visit(V& v, ExperimentConfig& c) {
  v.required("name", c.name, "Experiment name (used in the output folder and the report).");
  v.field("description", c.description, "Free text.");
  v.one_of("device", c.device, {"auto", "cpu", "cuda"}, "Where to train; auto = cuda when available.");
  v.section("task", c.task, "Model and data.");
  v.section("train", c.train, "The training loop.");
  v.section("optim", c.optim, "The optimizer.");
  v.section("schedule", c.schedule, "The learning-rate schedule.");
  v.section("precision", c.precision, "Numeric precision.");
  v.section("accumulation", c.accumulation, "Gradient accumulation.");
  v.section("checkpointing", c.checkpointing, "Activation checkpointing.");
  v.section("policy", c.policy, "Online decisions about the optimizations (policy: auto).");
  v.section("distributed", c.distributed, "Processes and gradient sync.");
  v.section("output", c.output, "Where and how often results are written.");
}

// ---------------------------------------------------------------------------------------------
namespace {

// Checks that span several keys live here, in one place.
void check_consistency(const ExperimentConfig& c, const std::map<std::string, Source>& sources,
                       const Source& root) {
  auto where = [&](const std::string& key) {
    auto it = sources.find(key);
    return (it != sources.end() ? it->second : root).str();
  };
  if (c.train.max_steps == 0 && c.train.max_time_s == 0)
    throw UserError(where("train.max_steps") +
                    ": train.max_steps: expected a step limit (or train.max_time_s), found 0 with no time limit");
  if (c.optim.betas.size() != 2)
    throw UserError(where("optim.betas") + ": optim.betas: expected 2 numbers [beta1, beta2], found " +
                    std::to_string(c.optim.betas.size()));
  if (c.train.require_target && !c.train.target)
    throw UserError(where("train.require_target") +
                    ": train.require_target: expected train.target to be set, found null");
  if (c.accumulation.k_min > c.accumulation.k_max)
    throw UserError(where("accumulation.k_min") + ": accumulation.k_min: expected at most k_max (" +
                    std::to_string(c.accumulation.k_max) + "), found " + std::to_string(c.accumulation.k_min));
  if (c.distributed.world_size > 1 && c.distributed.grad_sync == "none")
    throw UserError(where("distributed.grad_sync") + ": distributed.grad_sync: none cannot run with world size " +
                    std::to_string(c.distributed.world_size) + "; expected auto, ddp or zero2");
  if (c.task.model.recompute_bn_relu &&
      !(c.task.model.fused_bn_relu && c.task.model.bn_kernels == "efftrain" && c.task.model.conv_grads_in_place))
    throw UserError(where("task.model.recompute_bn_relu") +
                    ": task.model.recompute_bn_relu: needs task.model.fused_bn_relu true, bn_kernels efftrain and "
                    "conv_grads_in_place true (the kernels that keep the source and remake the output)");
  if (c.checkpointing.policy == "budget" && c.checkpointing.budget_bytes < 1)
    throw UserError(where("checkpointing.budget_bytes") +
                    ": checkpointing.budget_bytes: expected a byte count >= 1 with policy budget, found " +
                    std::to_string(c.checkpointing.budget_bytes));
  if (c.checkpointing.policy == "every" && c.checkpointing.every < 1)
    throw UserError(where("checkpointing.every") +
                    ": checkpointing.every: expected an integer >= 1 with policy every, found " +
                    std::to_string(c.checkpointing.every));
  if (c.schedule.name != "constant") {
    const int64_t total = c.schedule.total ? c.schedule.total
                                           : (c.schedule.unit == "steps" ? c.train.max_steps : 0);
    if (total == 0)
      throw UserError(where("schedule.total") +
                      ": schedule.total: expected a length (train.max_steps is 0 or unit is samples), found 0");
    if (c.schedule.warmup > total)
      throw UserError(where("schedule.warmup") + ": schedule.warmup: expected at most the schedule length " +
                      std::to_string(total) + ", found " + std::to_string(c.schedule.warmup));
  }
}

}  // namespace

ExperimentConfig load(const std::string& path, const std::vector<std::string>& overrides) {
  Node root = load_composed(path);
  for (const auto& o : overrides) apply_override(root, o);
  ExperimentConfig cfg;
  std::map<std::string, Source> sources;
  Source where = root.src;
  if (where.file.empty()) where.file = path;
  Reader r(&root, "", where, &sources);
  visit(r, cfg);
  r.finish();
  check_consistency(cfg, sources, where);
  return cfg;
}

nlohmann::json to_json(const ExperimentConfig& cfg) {
  nlohmann::json j;
  JsonWriter w(j);
  visit(w, const_cast<ExperimentConfig&>(cfg));
  return j;
}

namespace {
bool plain_safe(const std::string& s) {
  if (s.empty()) return false;
  static const std::string special = ":#{}[],&*!|>'\"%@`";
  if (std::isspace(static_cast<unsigned char>(s.front())) ||
      std::isspace(static_cast<unsigned char>(s.back())) || s.front() == '-' || s.front() == '?')
    return false;
  for (char ch : s)
    if (special.find(ch) != std::string::npos || ch == '\n') return false;
  int64_t i;
  double d;
  if (parse_int(s, i) || parse_double(s, d)) return false;
  static const std::set<std::string> reserved = {"true", "false", "null", "~", "yes", "no", "on", "off",
                                                 "True", "False", "Null", "NULL", "TRUE", "FALSE"};
  return !reserved.count(s);
}

void emit_yaml(std::ostringstream& out, const nlohmann::json& j, int indent) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    out << std::string(indent, ' ') << it.key() << ":";
    const auto& v = it.value();
    if (v.is_object()) {
      out << "\n";
      emit_yaml(out, v, indent + 2);
      continue;
    }
    out << " ";
    if (v.is_string()) {
      const std::string s = v.get<std::string>();
      out << (plain_safe(s) ? s : v.dump());
    } else if (v.is_null()) {
      out << "null";
    } else {
      out << v.dump();  // numbers, booleans, flow lists
    }
    out << "\n";
  }
}
}  // namespace

std::string to_yaml(const ExperimentConfig& cfg) {
  std::ostringstream out;
  emit_yaml(out, to_json(cfg), 0);
  return out.str();
}

std::string config_hash(const ExperimentConfig& cfg) {
  return sha256_hex(to_json(cfg).dump()).substr(0, 16);
}

std::string reference_markdown() {
  std::ostringstream out;
  out << "| key | type | default | meaning |\n|---|---|---|---|\n";
  ExperimentConfig defaults;
  DocWriter w(out, "");
  visit(w, defaults);
  return out.str();
}

}  // namespace efftrain::config

// The typed, validated, fully resolved experiment. config::load turns YAML (with `base:`
// composition and --set overrides) into this; components read their own section and nothing
// else. Every field, its default and its meaning are listed once, in schema.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace efftrain::config {

struct DataConfig {
  std::string root;                 // folder with the dataset files (real datasets)
  bool synthetic = false;           // real-data tasks: use the synthetic set of the same shape
  int64_t train_samples = 4096;     // synthetic sets: examples in the training split
  int64_t eval_samples = 1024;      // synthetic sets: examples in the evaluation split
  int64_t eval_limit = 0;           // evaluate on the first N examples only; 0 = the whole split
  int64_t image_size = 16;          // synthetic images: height = width
  int64_t channels = 3;
  int64_t classes = 10;
  double noise = 0.5;               // synthetic images: std of the per-pixel noise
  bool augment = true;              // random crop + flip where the task has them
  std::string input_path = "host";  // host | device | fixed
  int64_t workers = 2;              // host loader threads
  int64_t prefetch = 4;             // host loader: batches prepared ahead
  bool pin_memory = true;           // host loader: page-locked batches (CUDA runs)
  int64_t seq_len = 1024;           // language tasks: tokens per sequence
  std::string vocab_dir;            // language tasks: GPT-2 vocab.json + merges.txt; empty = <root>/gpt2
  std::string cache_dir;            // token caches; empty = ~/.cache/efftrain/tokens
  std::string train_split = "train";  // language tasks: train | valid | test
  std::string eval_split = "valid";
};

struct ModelConfig {
  int64_t width = 16;  // channels of the first stage (CNNs) or embedding width (GPT)
  int64_t depth = 2;   // stages / blocks / layers
  std::vector<int64_t> blocks = {3, 4, 6, 3};  // ResNet: bottleneck blocks per stage
  int64_t heads = 4;
  int64_t vocab = 0;   // 0 = from the tokenizer
  int64_t vocab_multiple = 1;  // GPT: embedding/classifier rows padded up to a multiple of this
  bool fused_loss = false;     // GPT: fused cross-entropy kernel on the logits' own dtype (CUDA)
  bool fused_norm = false;     // GPT: fused residual add + dropout + LayerNorm kernels (CUDA)
  bool fused_gelu = false;     // GPT: the MLP's bias + GELU in cuBLASLt's matmul epilogue (CUDA, fp16/bf16)
  std::string matmul = "aten";  // GPT: whose matrix products: aten | cublaslt | tuned (kernels/matmul.h)
  int64_t head_chunk_rows = 0;  // GPT: classifier rows per chunk in training (fused_loss / selective); 0 = auto
  int64_t context = 1024;
  double dropout = 0.0;
  bool channels_last = false;
  bool fused_bn_relu = false;  // ResNet: fused BatchNorm (+ add) + ReLU kernels (CUDA, fp16/bf16, NHWC)
  std::string bn_kernels = "cudnn";  // fused_bn_relu's kernels: cudnn | efftrain (kernels/bn.cu)
  bool conv_grads_in_place = false;  // ResNet: convolutions' weight casts and gradients routed by the project (CUDA, fp16/bf16)
  bool recompute_bn_relu = false;  // ResNet: the convolutions after a BatchNorm + ReLU keep its input, remake its output
  std::string norm = "batch";      // small CNN: batch | none
  bool zero_init_residual = false;
  std::string attention = "sdpa";  // plain | sdpa
  std::string sdpa_backend = "auto";  // auto | cudnn | flash | efficient | math
};

struct TaskConfig {
  std::string name;
  DataConfig data;
  ModelConfig model;
};

struct TrainConfig {
  int64_t batch_size = 32;         // micro-batch per rank
  int64_t max_steps = 100;         // optimizer steps; 0 = no limit (then max_time_s must be set)
  double max_time_s = 0;           // 0 = no limit
  int64_t eval_every = 50;         // optimizer steps between evaluations; 0 = only at the end
  int64_t eval_every_samples = 0;  // > 0: evaluate each time this many samples (all ranks) have passed instead
  std::optional<double> target;    // quality target (task metric); null = none
  bool stop_at_target = true;
  bool require_target = false;     // exit 3 when the target was not reached
  uint64_t seed = 0;
  int64_t timing_warmup_steps = 3; // steps excluded from throughput
  bool timing_restart_on_k_change = false;  // the throughput window starts again after a change of k
  bool cuda_graph = false;         // replay each micro-batch's forward + backward from a CUDA graph
  bool deterministic = false;      // cuDNN: deterministic algorithms, no autotuning
  int64_t profile_start_step = 0;  // Kineto trace of steps [start, start + profile_steps); 0 = off
  int64_t profile_steps = 3;
  int64_t memory_snapshot_steps = 0;  // the allocator's history through this many steps, saved; 0 = off
  std::string init_from;           // checkpoint folder: start from its model and optimizer state
};

struct OptimConfig {
  std::string name = "adamw";
  double lr = 1e-4;
  std::vector<double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.01;
  double grad_clip = 0;  // max global gradient norm; 0 = off
};

struct ScheduleConfig {
  std::string name = "constant";
  std::string unit = "steps";  // steps | samples
  int64_t warmup = 0;          // in `unit`
  double warmup_start_factor = 0.0;
  int64_t total = 0;           // in `unit`; 0 = from train.max_steps
  double min_lr = 0.0;
};

struct PrecisionConfig {
  std::string mode = "fp32";
  bool tf32 = false;
  int64_t initial_scale_power = 16;
  int64_t loss_scale_window = 2000;
  int64_t hysteresis = 2;
  double min_loss_scale = 1.0;
  int64_t max_overflows_at_min_scale = 10;
};

struct AccumulationConfig {
  std::string mode = "none";
  int64_t k = 1;  // fixed: micro-batches per optimizer step; adaptive: the first k
  int64_t k_min = 1;
  int64_t k_max = 16;
  int64_t interval = 10;          // adaptive: optimizer steps between decisions
  double factor = 1.0;            // adaptive: target global batch = factor x B_noise
  double ema = 0.95;              // adaptive: smoothing of |G|^2 and tr(Sigma)
  double hysteresis = 0.3;        // adaptive: k changes only when the target batch leaves +-30% of the current
  std::string lr_response = "none";  // none | sqrt | linear | adascale
};

struct CheckpointingConfig {
  std::string policy = "none";
  int64_t every = 0;         // policy every: blocks per segment
  int64_t budget_bytes = 0;  // policy budget: activation memory budget
};

struct PolicyConfig {
  std::string mode = "none";        // none | auto
  int64_t memory_budget_bytes = 0;  // 0 = the device's memory (CUDA); no limit on the CPU
  double headroom = 0.1;            // fraction of the budget kept free
  int64_t observe_steps = 3;        // optimizer steps measured before deciding
};

struct DistributedConfig {
  int64_t world_size = 1;
  std::string backend = "auto";  // auto | nccl | gloo
  std::string grad_sync = "auto";  // auto = none for one process, auto_sync for more
  std::string auto_sync = "ddp";   // what auto means with several processes: ddp | zero2
  double bucket_mb = 25;
  std::string comm_dtype = "fp32";  // gradient collectives of ddp/zero2: fp32 | bf16 | fp16
  bool overlap_comm = true;         // ddp/zero2: buckets sent during backward (false: after it)
  bool gradient_as_bucket_view = false;  // ddp/zero2 eager: each .grad lives in its bucket (no copy)
  double timeout_s = 300;          // rendezvous and every collective
  double stop_grace_s = 10;        // launcher: SIGTERM to SIGKILL when a worker fails
  bool bind_cpus = false;          // launcher: each worker on its own contiguous share of the CPUs

  // The grad sync that runs at `world` processes: auto is none for one, auto_sync for more.
  std::string resolved_grad_sync(int64_t world) const {
    if (grad_sync != "auto") return grad_sync;
    return world > 1 ? auto_sync : "none";
  }
};

struct OutputConfig {
  std::string dir;            // empty = runs/<name>-<UTC timestamp>
  int64_t log_every = 10;     // optimizer steps between progress lines and metrics.jsonl rows
  double peak_tflops = 0;     // override of the device's dense peak for MFU; 0 = table
  bool save_model = false;    // write model.pt (final parameters and buffers by name)
  bool save_checkpoint = false;      // a checkpoint at the end of training
  int64_t checkpoint_every_steps = 0;  // and every N optimizer steps; 0 = never
  double checkpoint_every_min = 0;     // and every M minutes of the training loop; 0 = never
  int64_t keep_checkpoints = 3;        // the newest K are kept; 0 = all
};

struct ExperimentConfig {
  std::string name;
  std::string description;
  std::string device = "auto";  // auto | cpu | cuda
  TaskConfig task;
  TrainConfig train;
  OptimConfig optim;
  ScheduleConfig schedule;
  PrecisionConfig precision;
  AccumulationConfig accumulation;
  CheckpointingConfig checkpointing;
  PolicyConfig policy;
  DistributedConfig distributed;
  OutputConfig output;
};

// Loads, composes, overrides and validates. Throws UserError ("file:line:col: key: ...").
ExperimentConfig load(const std::string& path, const std::vector<std::string>& overrides = {});

// The resolved config with every field (defaults included), in schema order.
nlohmann::json to_json(const ExperimentConfig& cfg);
std::string to_yaml(const ExperimentConfig& cfg);
// SHA-256 of the canonical JSON form (first 16 hex digits).
std::string config_hash(const ExperimentConfig& cfg);
// Markdown reference of every key: type, default, meaning.
std::string reference_markdown();

}  // namespace efftrain::config

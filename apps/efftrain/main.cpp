// efftrain: the command line. Parses arguments and calls into the library; no training logic.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>

#include "efftrain/config/config.h"
#include "efftrain/core/error.h"
#include "efftrain/core/registry.h"
#include "efftrain/core/util.h"
#include "efftrain/data/gpt2_tokenizer.h"
#include "efftrain/engine/run.h"
#include "efftrain/engine/tune.h"
#include "efftrain/metrics/report.h"

namespace {

int fail(int code, const std::string& message) {
  std::cerr << "efftrain: error: " << message << std::endl;
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace efftrain;
  CLI::App app{"efftrain: run, measure and compare training-efficiency experiments"};
  app.set_version_flag("--version", "efftrain " + report::efftrain_version() + " (" + report::git_commit() + ")");
  app.require_subcommand(1);
  app.footer("Example: efftrain run experiments/quickstart.yaml --set train.max_steps=50");

  RunOptions run_opts;
  std::string nproc, device;
  auto* run = app.add_subcommand("run", "Train one experiment and write report.json, metrics.jsonl, config.yaml");
  run->add_option("experiment", run_opts.experiment, "Experiment YAML file")->required();
  run->add_option("--set", run_opts.overrides, "Override a config key: key.path=value (value is YAML); repeatable");
  run->add_option("--nproc", nproc, "Number of processes (one per GPU); same as distributed.world_size");
  run->add_option("--device", device, "cpu, cuda or auto; same as the config key device");
  run->add_option("--out", run_opts.out_dir, "Output folder (default: runs/<name>-<UTC timestamp>)");
  run->add_flag("--overwrite", run_opts.overwrite, "Allow writing into a non-empty output folder");
  run->add_option("--resume", run_opts.resume,
                  "Continue from a checkpoint folder, a run folder (its newest checkpoint), or auto (the newest "
                  "valid one in the output folder; none: start)");
  run->add_option("--max-restarts", run_opts.max_restarts,
                  "Restart every worker from the newest checkpoint after a failure, up to this many times")
      ->check(CLI::NonNegativeNumber);
  run->footer("Example: efftrain run experiments/quickstart.yaml --set optim.lr=3e-4 --out runs/lr3e-4");

  tune::CliOptions tune_opts;
  auto* tune_cmd = app.add_subcommand(
      "tune", "Measure candidate configurations (precision, checkpointing, micro-batch) for a few steps each and "
              "write the best by goodput under a memory budget as YAML, with the table of every candidate");
  tune_cmd->add_option("experiment", tune_opts.experiment, "Experiment YAML file")->required();
  tune_cmd->add_option("--set", tune_opts.overrides, "Override a config key: key.path=value; repeatable");
  tune_cmd->add_option("--budget-memory", tune_opts.search.budget_bytes, "Peak memory budget in bytes (0 = none)")
      ->check(CLI::NonNegativeNumber);
  tune_cmd->add_option("--headroom-weight", tune_opts.search.headroom_weight,
                       "Score bonus per unit of memory headroom under the budget (default 0)")
      ->check(CLI::NonNegativeNumber);
  tune_cmd->add_option("--time", tune_opts.search.time_limit_s, "Stop starting candidates after this many seconds")
      ->check(CLI::NonNegativeNumber);
  tune_cmd->add_option("--steps", tune_opts.steps, "Optimizer steps per candidate (default 30)")->check(CLI::PositiveNumber);
  tune_cmd->add_option("--out", tune_opts.out_dir, "Output folder (default runs/<name>-tune)");
  tune_cmd->footer("Example: efftrain tune experiments/quickstart.yaml --budget-memory 4000000000 --steps 20");

  std::string validate_file;
  std::vector<std::string> validate_overrides;
  bool validate_reference = false;
  auto* validate = app.add_subcommand("validate", "Print the fully resolved config, or the first error");
  validate->add_option("experiment", validate_file, "Experiment YAML file");
  validate->add_option("--set", validate_overrides, "Override a config key: key.path=value; repeatable");
  validate->add_flag("--reference", validate_reference, "Print the Markdown reference of every config key instead");
  validate->footer("Example: efftrain validate experiments/quickstart.yaml --set train.batch_size=64");

  auto* list = app.add_subcommand("list", "List every registered component by kind and name");
  list->footer("Example: efftrain list");

  std::vector<std::string> compare_files;
  auto* compare = app.add_subcommand("compare", "Markdown table of reports, with ratios to the first");
  compare->add_option("reports", compare_files, "report.json files")->required();
  compare->footer("Example: efftrain compare runs/baseline/report.json runs/optimized/report.json");

  std::string vocab_dir;
  std::vector<std::string> tokenize_files;
  bool print_ids = false;
  auto* tokenize = app.add_subcommand("tokenize", "Encode files with the GPT-2 BPE: token counts, or the ids");
  tokenize->add_option("--vocab", vocab_dir, "Folder with vocab.json + merges.txt (or encoder.json + vocab.bpe)")->required();
  tokenize->add_flag("--ids", print_ids, "Print the ids of each file as a JSON array instead of the count");
  tokenize->add_option("files", tokenize_files, "UTF-8 text files, each encoded as one text")->required();
  tokenize->footer("Example: efftrain tokenize --vocab .data/prepared/gpt2 .data/prepared/wikitext-2/wiki.valid.tokens");

  if (argc > 1 && argv[1][0] != '-') {
    std::vector<std::string> names;
    for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(sub->get_name());
    if (std::find(names.begin(), names.end(), argv[1]) == names.end()) {
      std::string msg = std::string("unknown subcommand '") + argv[1] + "'";
      const std::string guess = closest_match(argv[1], names);
      if (!guess.empty()) msg += "; did you mean '" + guess + "'?";
      return fail(exit_code::kUser, msg + " (expected one of: " + join(names, ", ") + ")");
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(exit_code::kUser, std::string(e.what()) + " (see efftrain --help)");
  }

  try {
    if (run->parsed()) {
      if (!nproc.empty()) run_opts.overrides.push_back("distributed.world_size=" + nproc);
      if (!device.empty()) run_opts.overrides.push_back("device=" + device);
      run_opts.worker_argv.assign(argv, argv + argc);
      const RunOutcome outcome = run_experiment(run_opts);
      if (!outcome.report_path.empty()) std::cout << outcome.report_path << std::endl;
      return outcome.exit_code;
    }
    if (tune_cmd->parsed()) return tune::run_cli(tune_opts);
    if (validate->parsed()) {
      if (validate_reference) {
        std::cout << config::reference_markdown();
        return exit_code::kOk;
      }
      if (validate_file.empty()) return fail(exit_code::kUser, "validate: an experiment file is required");
      std::cout << config::to_yaml(config::load(validate_file, validate_overrides));
      return exit_code::kOk;
    }
    if (list->parsed()) {
      std::string kind;
      for (const auto& e : catalog::list()) {
        if (e.kind != kind) std::cout << (kind.empty() ? "" : "\n") << e.kind << ":\n";
        kind = e.kind;
        std::printf("  %-16s %s\n", e.name.c_str(), e.description.c_str());
      }
      return exit_code::kOk;
    }
    if (tokenize->parsed()) {
      const auto tok = data::Gpt2Tokenizer::load(vocab_dir);
      for (const auto& f : tokenize_files) {
        const auto ids = tok.encode(read_file(f, "text file"), /*allow_special=*/true, f);
        if (print_ids) {
          std::string line = "[";
          for (size_t i = 0; i < ids.size(); ++i) line += (i ? "," : "") + std::to_string(ids[i]);
          std::cout << f << " " << line << "]\n";
        } else {
          std::cout << f << " " << ids.size() << "\n";
        }
      }
      return exit_code::kOk;
    }
    if (compare->parsed()) {
      std::vector<nlohmann::json> reports;
      for (const auto& f : compare_files) reports.push_back(report::read(f));
      std::cout << report::compare_markdown(compare_files, reports);
      return exit_code::kOk;
    }
  } catch (const UserError& e) {
    return fail(exit_code::kUser, e.what());
  } catch (const TrainingFailed& e) {
    return fail(exit_code::kTrainingFailed, e.what());
  } catch (const std::exception& e) {
    return fail(exit_code::kInternal, std::string("internal error: ") + e.what());
  }
  return exit_code::kInternal;
}

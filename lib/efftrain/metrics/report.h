// Report: the JSON document of one run (schema efftrain.report/1, docs/report-schema.md).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace efftrain::report {

constexpr const char* kSchema = "efftrain.report/1";

// Writes atomically (temporary name, fsync, rename).
void write(const std::string& path, const nlohmann::json& report);

// Reads and checks the schema; UserError naming the file when it is not a report.
nlohmann::json read(const std::string& path);

// Markdown: a table of the key figures of each report, with ratios to the first; then a table
// by configuration (reports that differ only in train.seed grouped): median [min-max] over the
// runs, and against the first configuration the throughput gain, peak-memory reduction,
// time-to-target reduction, quality delta (positive = better; none where both configurations
// stopped at their target, whose final metrics are then only the stopping evaluations') and
// scaling efficiency (when the world size differs).
std::string compare_markdown(const std::vector<std::string>& paths,
                             const std::vector<nlohmann::json>& reports);

// efftrain version and the git commit it was built from (build_info.cpp, generated).
std::string efftrain_version();
std::string git_commit();

}  // namespace efftrain::report

#include "efftrain/metrics/report.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "efftrain/core/error.h"
#include "efftrain/core/util.h"

namespace efftrain::report {

void write(const std::string& path, const nlohmann::json& report) {
  write_file_atomic(path, report.dump(2) + "\n");
}

nlohmann::json read(const std::string& path) {
  const std::string text = read_file(path, "report");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw UserError(path + ": not valid JSON (byte " + std::to_string(e.byte) + ")");
  }
  if (!j.is_object() || !j.contains("schema") || !j["schema"].is_string())
    throw UserError(path + ": not an efftrain report (no \"schema\" field)");
  if (j["schema"] != kSchema)
    throw UserError(path + ": report schema " + j["schema"].get<std::string>() + ", expected " + kSchema);
  return j;
}

namespace {
std::optional<double> number_at(const nlohmann::json& j, const std::string& pointer) {
  try {
    const auto& v = j.at(nlohmann::json::json_pointer(pointer));
    if (v.is_number()) return v.get<double>();
  } catch (...) {
  }
  return std::nullopt;
}

std::string fmt_num(std::optional<double> v, const char* f) {
  if (!v) return "—";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, *v);
  return buf;
}

std::string fmt_ratio(std::optional<double> v, std::optional<double> base) {
  if (!v || !base || *base == 0) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, " (%.2fx)", *v / *base);
  return buf;
}
}  // namespace

std::string compare_markdown(const std::vector<std::string>& paths,
                             const std::vector<nlohmann::json>& reports) {
  struct Col {
    const char* title;
    const char* pointer;
    const char* fmt;
    double scale;
  };
  const std::vector<Col> cols = {
      {"samples/s", "/throughput/samples_per_s", "%.1f", 1},
      {"tokens/s", "/throughput/tokens_per_s", "%.0f", 1},
      {"peak alloc (MiB)", "/memory/peak_allocated_bytes", "%.1f", 1.0 / (1024 * 1024)},
      {"time to target (s)", "/result/time_to_target_s", "%.2f", 1},
      {"final metric", "/quality/final", "%.4f", 1},
      {"MFU", "/mfu", "%.4f", 1},
  };
  std::ostringstream out;
  out << "| run | status | device |";
  for (const auto& c : cols) out << " " << c.title << " |";
  out << "\n|---|---|---|";
  for (size_t i = 0; i < cols.size(); ++i) out << "---|";
  out << "\n";
  for (size_t r = 0; r < reports.size(); ++r) {
    const auto& j = reports[r];
    std::string name = j.value("/experiment/name"_json_pointer, std::string("?"));
    out << "| " << name << " (" << paths[r] << ") | " << j.value("status", std::string("?")) << " | "
        << j.value("/environment/device_name"_json_pointer, std::string("?")) << " |";
    for (const auto& c : cols) {
      auto v = number_at(j, c.pointer);
      auto b = number_at(reports[0], c.pointer);
      if (v) *v *= c.scale;
      if (b) *b *= c.scale;
      out << " " << fmt_num(v, c.fmt) << (r > 0 ? fmt_ratio(v, b) : "") << " |";
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace efftrain::report

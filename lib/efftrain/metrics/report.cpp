#include "efftrain/metrics/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
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

// ---- by configuration: seeds grouped, median [min-max], against the first configuration ----
struct Stat {
  std::vector<double> v;
  std::optional<double> median() const {
    if (v.empty()) return std::nullopt;
    auto w = v;
    std::sort(w.begin(), w.end());
    const size_t n = w.size();
    return n % 2 ? w[n / 2] : 0.5 * (w[n / 2 - 1] + w[n / 2]);
  }
  std::string str(const char* f, double scale = 1) const {
    auto m = median();
    if (!m) return "—";
    std::string s = fmt_num(*m * scale, f);
    if (v.size() > 1) {
      const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
      s += " [" + fmt_num(*lo * scale, f) + "–" + fmt_num(*hi * scale, f) + "]";
    }
    return s;
  }
};

struct Group {
  std::string label;
  int seeds = 0;
  int reached = 0;
  int stopped = 0;  // runs that ended at the target (their final metric is the stopping evaluation's)
  double world = 1;
  Stat sps, mem, ttt, metric;
  bool higher_is_better = true;
};

std::string by_configuration(const std::vector<nlohmann::json>& reports) {
  std::vector<std::string> order;
  std::map<std::string, Group> groups;
  for (const auto& j : reports) {
    nlohmann::json cfg = j.value("/experiment/config"_json_pointer, nlohmann::json::object());
    if (cfg.contains("train")) cfg["train"].erase("seed");
    if (cfg.contains("output")) cfg["output"].erase("dir");
    const std::string key = cfg.dump();
    if (!groups.count(key)) {
      order.push_back(key);
      Group g;
      g.label = j.value("/experiment/name"_json_pointer, std::string("?"));
      for (const auto& o : j.value("/experiment/overrides"_json_pointer, nlohmann::json::array()))
        if (o.is_string() && o.get<std::string>().rfind("train.seed=", 0) != 0) g.label += " " + o.get<std::string>();
      g.world = number_at(j, "/environment/world_size").value_or(1);
      g.higher_is_better = j.value("/quality/higher_is_better"_json_pointer, true);
      groups[key] = g;
    }
    Group& g = groups[key];
    ++g.seeds;
    const std::string status = j.value("status", "");
    if (status == "failed" || status == "diverged") continue;
    if (status == "target_reached") ++g.stopped;
    if (auto v = number_at(j, "/throughput/samples_per_s")) g.sps.v.push_back(*v);
    if (auto v = number_at(j, "/memory/peak_allocated_bytes")) g.mem.v.push_back(*v);
    if (auto v = number_at(j, "/quality/final")) g.metric.v.push_back(*v);
    if (auto v = number_at(j, "/result/time_to_target_s")) {
      g.ttt.v.push_back(*v);
      ++g.reached;
    }
  }
  const Group& b = groups[order.front()];
  std::ostringstream out;
  out << "| configuration | runs | samples/s | throughput gain | peak alloc (MiB) | memory reduction | "
         "time to target (s) | time-to-target reduction | final metric | quality delta | scaling efficiency |\n"
      << "|---|---|---|---|---|---|---|---|---|---|---|\n";
  auto ratio = [](std::optional<double> a, std::optional<double> c, const char* f) {
    return a && c && *c != 0 ? fmt_num(*a / *c, f) : std::string("—");
  };
  for (const auto& key : order) {
    const Group& g = groups[key];
    const auto sps = g.sps.median(), bsps = b.sps.median();
    const auto mem = g.mem.median(), bmem = b.mem.median();
    const auto ttt = g.ttt.median(), bttt = b.ttt.median();
    const auto met = g.metric.median(), bmet = b.metric.median();
    std::string reduction = "—", delta = "—", scaling = "—";
    if (mem && bmem && *bmem > 0) reduction = fmt_num(100.0 * (1.0 - *mem / *bmem), "%.1f%%");
    if (&g != &b && g.stopped == g.seeds && b.stopped == b.seeds && b.seeds > 0) {
      // Both stopped at the first evaluation that met the same target: the final metrics are
      // that evaluation's overshoot, not a quality difference (design 5: equal target).
      delta = "— (both stopped at the target)";
    } else if (met && bmet && *bmet != 0) {
      // Positive = better, whichever way the metric goes.
      const double d = (*met - *bmet) / std::fabs(*bmet) * (g.higher_is_better ? 1 : -1);
      delta = fmt_num(100.0 * d, "%+.2f%%");
    }
    if (sps && bsps && *bsps > 0 && g.world != b.world)
      scaling = fmt_num(100.0 * *sps / (g.world / b.world * *bsps), "%.1f%%");
    out << "| " << g.label << " | " << g.seeds << " | " << g.sps.str("%.1f") << " | " << ratio(sps, bsps, "%.2fx")
        << " | " << g.mem.str("%.1f", 1.0 / (1024 * 1024)) << " | " << reduction << " | " << g.ttt.str("%.2f")
        << (g.reached < g.seeds ? " (" + std::to_string(g.reached) + "/" + std::to_string(g.seeds) + " reached)" : "")
        << " | " << ratio(bttt, ttt, "%.2fx") << " | " << g.metric.str("%.4f") << " | " << delta << " | " << scaling
        << " |\n";
  }
  return out.str();
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
  out << "\n" << by_configuration(reports);
  return out.str();
}

}  // namespace efftrain::report

#include "efftrain/core/registry.h"

#include <algorithm>
#include <mutex>

#include "efftrain/core/error.h"
#include "efftrain/core/util.h"

namespace efftrain::catalog {

namespace {
std::vector<Entry>& entries() {
  static std::vector<Entry> e;
  return e;
}
}  // namespace

void add(const std::string& kind, const std::string& name, const std::string& description) {
  auto& e = entries();
  auto it = std::find_if(e.begin(), e.end(),
                         [&](const Entry& x) { return x.kind == kind && x.name == name; });
  if (it != e.end()) {
    it->description = description;
    return;
  }
  e.push_back({kind, name, description});
}

std::vector<Entry> list(const std::string& kind) {
  std::vector<Entry> out;
  for (const auto& e : entries())
    if (kind.empty() || e.kind == kind) out.push_back(e);
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
    return a.kind != b.kind ? a.kind < b.kind : a.name < b.name;
  });
  return out;
}

std::vector<std::string> names(const std::string& kind) {
  std::vector<std::string> out;
  for (const auto& e : list(kind)) out.push_back(e.name);
  return out;
}

bool has(const std::string& kind, const std::string& name) {
  for (const auto& e : entries())
    if (e.kind == kind && e.name == name) return true;
  return false;
}

}  // namespace efftrain::catalog

namespace efftrain {
void throw_unknown_component(const std::string& kind, const std::string& name) {
  throw UserError("unknown " + kind + " '" + name + "'; registered: " +
                  join(catalog::names(kind), ", "));
}
}  // namespace efftrain

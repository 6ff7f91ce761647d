// The component registry: every implementation of an interface registers itself by name,
// in one line beside its code:
//
//   EFFTRAIN_REGISTER(Precision, "fp32", "FP32 throughout (the baseline)",
//                     [](const BuildContext& ctx) { return std::make_unique<Fp32>(); });
//
// `efftrain list` and config validation read the torch-free catalog below; the engine calls
// Registry<Interface>::create(name, ctx). Interfaces name their kind with
// `static constexpr const char* kKind = "precision";`.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace efftrain {

namespace catalog {

struct Entry {
  std::string kind;
  std::string name;
  std::string description;
};

void add(const std::string& kind, const std::string& name, const std::string& description);
// Entries of one kind (or all when kind is empty), sorted by kind then name.
std::vector<Entry> list(const std::string& kind = "");
std::vector<std::string> names(const std::string& kind);
bool has(const std::string& kind, const std::string& name);

}  // namespace catalog

struct BuildContext;  // defined in engine/context.h

template <class Interface>
class Registry {
 public:
  using Factory = std::function<std::unique_ptr<Interface>(const BuildContext&)>;

  static bool add(const std::string& name, const std::string& description, Factory factory) {
    factories()[name] = std::move(factory);
    catalog::add(Interface::kKind, name, description);
    return true;
  }

  // The caller has validated the name against the catalog (config::load does).
  static std::unique_ptr<Interface> create(const std::string& name, const BuildContext& ctx);

 private:
  static std::map<std::string, Factory>& factories() {
    static std::map<std::string, Factory> f;
    return f;
  }
};

[[noreturn]] void throw_unknown_component(const std::string& kind, const std::string& name);

template <class Interface>
std::unique_ptr<Interface> Registry<Interface>::create(const std::string& name,
                                                       const BuildContext& ctx) {
  auto it = factories().find(name);
  if (it == factories().end()) throw_unknown_component(Interface::kKind, name);
  return it->second(ctx);
}

#define EFFTRAIN_CONCAT_INNER(a, b) a##b
#define EFFTRAIN_CONCAT(a, b) EFFTRAIN_CONCAT_INNER(a, b)
#define EFFTRAIN_REGISTER(Interface, name, description, factory)                    \
  static const bool EFFTRAIN_CONCAT(efftrain_registered_, __LINE__) [[maybe_unused]] = \
      ::efftrain::Registry<Interface>::add(name, description, factory)

}  // namespace efftrain

// A YAML document as a tree that remembers where every value came from (file:line:col, or the
// --set override), so that validation errors can point at the exact place.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace efftrain::config {

struct Source {
  std::string file;  // a path, or "--set a.b=v" for command-line overrides
  int line = 0;      // 1-based; 0 when not known
  int col = 0;
  std::string str() const;
};

struct Node {
  enum class Kind { Null, Scalar, Seq, Map };
  Kind kind = Kind::Null;
  std::string scalar;
  bool quoted = false;  // a quoted scalar is always a string
  std::vector<Node> seq;
  std::vector<std::pair<std::string, Node>> map;  // in document order
  Source src;

  const Node* find(const std::string& key) const;
  Node* find(const std::string& key);
  Node& get_or_add(const std::string& key, const Source& src);
  bool is_map() const { return kind == Kind::Map; }
  // How a value is described in error messages: 'abc', a list, a map, nothing.
  std::string describe() const;
};

// Parses YAML text. `file` is used in error messages.
Node parse_yaml(const std::string& text, const std::string& file);

// Loads an experiment file and composes its `base:` list (each entry resolved relative to the
// including file's folder, then each folder above it; later entries win; maps merge deeply).
// The returned tree no longer contains `base`. Errors are UserError with file:line:col.
Node load_composed(const std::string& path);

// Deep merge: maps merge key by key, anything else in `over` replaces what is in `base`.
void merge_into(Node& base, const Node& over);

// Applies "a.b.c=value" (value parsed as YAML) to the tree.
void apply_override(Node& root, const std::string& assignment);

}  // namespace efftrain::config

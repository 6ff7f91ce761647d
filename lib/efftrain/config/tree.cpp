#include "efftrain/config/tree.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <set>

#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/util.h"

namespace efftrain::config {

namespace fs = std::filesystem;

std::string Source::str() const {
  if (line <= 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(col);
}

const Node* Node::find(const std::string& key) const {
  for (const auto& kv : map)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

Node* Node::find(const std::string& key) {
  for (auto& kv : map)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

Node& Node::get_or_add(const std::string& key, const Source& s) {
  if (Node* n = find(key)) return *n;
  Node n;
  n.src = s;
  map.emplace_back(key, std::move(n));
  return map.back().second;
}

std::string Node::describe() const {
  switch (kind) {
    case Kind::Null: return "nothing (null)";
    case Kind::Scalar: return "'" + scalar + "'";
    case Kind::Seq: return "a list";
    case Kind::Map: return "a map";
  }
  return "?";
}

namespace {

Source mark_source(const std::string& file, const YAML::Mark& m) {
  Source s;
  s.file = file;
  if (m.line >= 0) {
    s.line = m.line + 1;
    s.col = m.column + 1;
  }
  return s;
}

Node convert(const YAML::Node& y, const std::string& file) {
  Node n;
  n.src = mark_source(file, y.Mark());
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      n.kind = Node::Kind::Null;
      break;
    case YAML::NodeType::Scalar:
      n.kind = Node::Kind::Scalar;
      n.scalar = y.Scalar();
      n.quoted = (y.Tag() == "!");
      // An escape in a quoted scalar ("\x85") can make bytes that are not UTF-8.
      if (invalid_utf8_offset(n.scalar) != std::string::npos)
        throw UserError(n.src.str() + ": the value is not UTF-8 text (after YAML escapes)");
      break;
    case YAML::NodeType::Sequence:
      n.kind = Node::Kind::Seq;
      for (const auto& item : y) n.seq.push_back(convert(item, file));
      break;
    case YAML::NodeType::Map:
      n.kind = Node::Kind::Map;
      for (const auto& kv : y) {
        const Source ks = mark_source(file, kv.first.Mark());
        if (!kv.first.IsScalar())
          throw UserError(ks.str() + ": keys must be plain names, found a " +
                          (kv.first.IsMap() ? "map" : "list"));
        const std::string key = kv.first.Scalar();
        if (invalid_utf8_offset(key) != std::string::npos)
          throw UserError(ks.str() + ": the key is not UTF-8 text (after YAML escapes)");
        if (n.find(key)) throw UserError(ks.str() + ": " + key + ": duplicate key");
        Node child = convert(kv.second, file);
        if (child.kind == Node::Kind::Null) child.src = ks;  // `key:` with nothing after it
        n.map.emplace_back(key, std::move(child));
      }
      break;
  }
  return n;
}

std::string resolve_base(const std::string& entry, const fs::path& including_dir,
                         const Source& where) {
  fs::path p(entry);
  if (p.is_absolute()) {
    if (files::exists(p.string())) return p.string();
  } else {
    for (fs::path dir = files::absolute(including_dir.empty() ? "." : including_dir.string());;
         dir = dir.parent_path()) {
      fs::path candidate = dir / p;
      if (files::exists(candidate.string())) return candidate.lexically_normal().string();
      if (dir == dir.parent_path()) break;
    }
  }
  throw UserError(where.str() + ": base: file '" + entry + "' not found (looked in " +
                  including_dir.string() + " and the folders above it)");
}

Node load_recursive(const std::string& path, std::vector<std::string>& stack,
                    const Source* included_from) {
  const std::string canon = files::absolute(path);
  for (const auto& s : stack)
    if (s == canon) {
      std::vector<std::string> chain(stack.begin(), stack.end());
      chain.push_back(canon);
      throw UserError((included_from ? included_from->str() : path) + ": base: cycle: " +
                      join(chain, " -> "));
    }
  if (!files::exists(path)) {
    const std::string where = included_from ? included_from->str() + ": base: " : "";
    throw UserError(where + path + ": experiment file not found");
  }
  const std::string text = read_file(path, "experiment file");
  Node root = parse_yaml(text, path);
  if (root.kind == Node::Kind::Null) throw UserError(path + ": the file is empty");
  if (!root.is_map())
    throw UserError(root.src.str() + ": expected a map of sections at the top level, found " +
                    root.describe());

  stack.push_back(canon);
  Node composed;
  composed.kind = Node::Kind::Map;
  composed.src = root.src;
  if (const Node* base = root.find("base")) {
    std::vector<const Node*> entries;
    if (base->kind == Node::Kind::Scalar) {
      entries.push_back(base);
    } else if (base->kind == Node::Kind::Seq) {
      for (const auto& e : base->seq) entries.push_back(&e);
    } else {
      throw UserError(base->src.str() + ": base: expected a file name or a list of file names, found " +
                      base->describe());
    }
    for (const Node* e : entries) {
      if (e->kind != Node::Kind::Scalar)
        throw UserError(e->src.str() + ": base: expected a file name, found " + e->describe());
      const std::string resolved = resolve_base(e->scalar, fs::path(path).parent_path(), e->src);
      Node b = load_recursive(resolved, stack, &e->src);
      merge_into(composed, b);
    }
  }
  stack.pop_back();

  Node own = root;
  own.map.erase(std::remove_if(own.map.begin(), own.map.end(),
                               [](const auto& kv) { return kv.first == "base"; }),
                own.map.end());
  merge_into(composed, own);
  return composed;
}

}  // namespace

// Config text is UTF-8: keys and values end up in JSON reports and in messages.
static void require_utf8(const std::string& text, const std::string& what) {
  if (const auto bad = invalid_utf8_offset(text); bad != std::string::npos) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(text[bad]));
    throw UserError(what + ": not UTF-8 text (byte " + std::to_string(bad) + " is " + hex + ")");
  }
}

Node parse_yaml(const std::string& text, const std::string& file) {
  require_utf8(text, file);
  try {
    return convert(YAML::Load(text), file);
  } catch (const YAML::Exception& e) {
    throw UserError(mark_source(file, e.mark).str() + ": malformed YAML: " + e.msg);
  }
}

Node load_composed(const std::string& path) {
  std::vector<std::string> stack;
  return load_recursive(path, stack, nullptr);
}

void merge_into(Node& base, const Node& over) {
  if (base.is_map() && over.is_map()) {
    for (const auto& kv : over.map) {
      if (Node* existing = base.find(kv.first)) {
        merge_into(*existing, kv.second);
      } else {
        base.map.push_back(kv);
      }
    }
    return;
  }
  base = over;
}

void apply_override(Node& root, const std::string& assignment) {
  require_utf8(assignment, "--set");
  Source src;
  src.file = "--set " + assignment;
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UserError(src.file + ": expected key.path=value");
  const std::string path = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  std::vector<std::string> keys;
  size_t start = 0;
  while (true) {
    const auto dot = path.find('.', start);
    keys.push_back(path.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const auto& k : keys)
    if (k.empty()) throw UserError(src.file + ": '" + path + "' has an empty key");
  if (keys.front() == "base") throw UserError(src.file + ": base cannot be overridden");

  Node parsed;
  try {
    parsed = convert(YAML::Load(value), src.file);
  } catch (const YAML::Exception& e) {
    throw UserError(src.file + ": value is not valid YAML: " + e.msg);
  }
  // Every node of the override points at the --set text, not at a line of it.
  std::function<void(Node&)> retag = [&](Node& n) {
    n.src = src;
    for (auto& c : n.seq) retag(c);
    for (auto& kv : n.map) retag(kv.second);
  };
  retag(parsed);

  Node* cur = &root;
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    if (!cur->is_map()) {
      cur->kind = Node::Kind::Map;
      cur->seq.clear();
      cur->scalar.clear();
    }
    cur = &cur->get_or_add(keys[i], src);
    if (!cur->is_map()) {
      if (cur->kind != Node::Kind::Null)
        throw UserError(src.file + ": " + join({keys.begin(), keys.begin() + i + 1}, ".") +
                        " is " + cur->describe() + ", not a section");
      cur->kind = Node::Kind::Map;
      cur->src = src;
    }
  }
  if (!cur->is_map()) cur->kind = Node::Kind::Map;
  Node& leaf = cur->get_or_add(keys.back(), src);
  if (leaf.is_map() && parsed.is_map()) {
    merge_into(leaf, parsed);
  } else {
    leaf = parsed;
  }
}

}  // namespace efftrain::config

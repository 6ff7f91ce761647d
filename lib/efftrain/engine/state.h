// Resume state in torch::serialize archives: small JSON values and tensors copied back in
// place (onto the tensor's own device). Used by the components' save_state/load_state.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>

#include "efftrain/core/error.h"

namespace efftrain::state {

inline void write_json(torch::serialize::OutputArchive& out, const std::string& key, const nlohmann::json& j) {
  out.write(key, c10::IValue(j.dump()));
}

inline nlohmann::json read_json(torch::serialize::InputArchive& in, const std::string& key) {
  c10::IValue v;
  if (!in.try_read(key, v) || !v.isString()) throw UserError("resume state: no entry '" + key + "'");
  try {
    return nlohmann::json::parse(v.toStringRef());
  } catch (const nlohmann::json::exception& e) {
    throw UserError("resume state: entry '" + key + "' is not JSON (" + e.what() + ")");
  }
}

// Copies the saved tensor into `dst` (same shape and dtype), keeping dst's device and storage.
inline void read_into(torch::serialize::InputArchive& in, const std::string& key, torch::Tensor& dst) {
  torch::Tensor src;
  if (!in.try_read(key, src)) throw UserError("resume state: no tensor '" + key + "'");
  if (src.sizes() != dst.sizes() || src.scalar_type() != dst.scalar_type())
    throw UserError("resume state: tensor '" + key + "' has shape " + c10::str(src.sizes()) + " " +
                    c10::toString(src.scalar_type()) + ", expected " + c10::str(dst.sizes()) + " " +
                    c10::toString(dst.scalar_type()));
  torch::NoGradGuard ng;
  dst.copy_(src);
}

}  // namespace efftrain::state

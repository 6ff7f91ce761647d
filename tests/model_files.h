// model.pt files in tests: read every tensor by name, and compare two models (or two tensors).
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <string>

namespace efftrain::test {

inline std::map<std::string, torch::Tensor> load_tensors(const std::string& path) {
  torch::serialize::InputArchive a;
  a.load_from(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& k : a.keys()) {
    torch::Tensor t;
    a.read(k, t);
    out[k] = t;
  }
  return out;
}

// ||a - b|| / ||a|| over every tensor; +inf when a name is missing from b.
inline double relative_difference(const std::map<std::string, torch::Tensor>& a,
                                  const std::map<std::string, torch::Tensor>& b) {
  double num = 0, den = 0;
  for (const auto& [k, t] : a) {
    if (b.count(k) == 0) return INFINITY;
    num += (t.to(torch::kDouble) - b.at(k).to(torch::kDouble)).pow(2).sum().item<double>();
    den += t.to(torch::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(num / den);
}

// ||a - b|| / ||b|| in double precision, on the CPU.
inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  auto af = a.detach().to(torch::kCPU, torch::kDouble), bf = b.detach().to(torch::kCPU, torch::kDouble);
  return ((af - bf).norm() / bf.norm().clamp_min(1e-30)).item<double>();
}

// Every tensor bit-for-bit equal (same names, shapes, dtypes and bytes).
inline bool identical(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [k, t] : a)
    if (b.count(k) == 0 || !torch::equal(t, b.at(k))) return false;
  return true;
}

}  // namespace efftrain::test

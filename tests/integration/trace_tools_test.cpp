// scripts/trace_phases.py and scripts/profile_summary.py on a made-up trace whose numbers are
// known: the micro-steps split by their place in the step, NCCL kernels in their own class; and
// scripts/memory_summary.py on a made-up allocator snapshot.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_floating_point.hpp>

#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>

#include "helpers.h"

using namespace efftrain::test;
using Catch::Matchers::WithinAbs;

namespace {

// Two optimizer steps of k = 3 micro-steps. The host ranges come first and every kernel is
// launched before the GPU is free, so no idle time is the host's. On the GPU each micro-step runs
// two 20 us kernels with a gap of 10 * (place + 1) us between them; the last one also runs a
// 7 us NCCL reduce-scatter.
nlohmann::json made_up_trace() {
  auto events = nlohmann::json::array();
  int corr = 0;
  auto range = [&](const std::string& name, double ts, double dur) {
    events.push_back({{"ph", "X"}, {"cat", "user_annotation"}, {"name", "efftrain::" + name}, {"ts", ts}, {"dur", dur}});
  };
  auto kernel = [&](const std::string& name, double launch, double ts, double dur) {
    ++corr;
    events.push_back({{"ph", "X"}, {"cat", "cuda_runtime"}, {"name", "cudaLaunchKernel"}, {"ts", launch},
                      {"dur", 1}, {"args", {{"correlation", corr}}}});
    events.push_back({{"ph", "X"}, {"cat", "kernel"}, {"name", name}, {"ts", ts}, {"dur", dur},
                      {"args", {{"correlation", corr}}}});
  };
  for (int step = 0; step < 2; ++step) {
    const double host = 1000.0 * step;
    double gpu = host + 100;
    range("zero_grad", host, 5);
    kernel("zero_kernel", host + 1, gpu, 5);
    gpu += 5;
    for (int i = 0; i < 3; ++i) {
      const double h = host + 10 + 10 * i;
      range("micro_step", h, 5);
      kernel("vectorized_elementwise_kernel", h + 1, gpu, 20);
      gpu += 20 + 10 * (i + 1);
      kernel("cudnn_conv_gemm", h + 2, gpu, 20);
      gpu += 20;
      if (i == 2) {
        kernel("ncclDevKernel_ReduceScatter_Sum_f32_RING_LL", h + 3, gpu, 7);
        gpu += 7;
      }
    }
  }
  return {{"traceEvents", events}, {"baseTimeNanoseconds", 0}};
}

}  // namespace

TEST_CASE("trace_phases.py splits the micro-steps by place; profile_summary.py keeps NCCL kernels apart") {
  TempDir d;
  const std::string trace = d.write("trace.json", made_up_trace().dump());
  const std::string scripts = EFFTRAIN_SOURCE_DIR "/scripts/";
  REQUIRE(std::system(("python3 '" + scripts + "trace_phases.py' --json '" + d.file("phases.json") + "' run='" + trace +
                       "' > '" + d.file("phases.txt") + "'").c_str()) == 0);
  const auto ph = nlohmann::json::parse(read_text(d.file("phases.json")))["run"];
  CHECK(ph["steps"] == 2);
  const auto& micro = ph["micro_steps"];
  REQUIRE(micro.size() == 3);
  for (int i = 0; i < 3; ++i) {
    INFO("place " << i);
    CHECK_THAT(micro[i]["idle_other_ms"].get<double>(), WithinAbs(0.010 * (i + 1), 1e-9));
    CHECK_THAT(micro[i].value("idle_host_ms", 0.0), WithinAbs(0.0, 1e-9));
    CHECK_THAT(micro[i]["gpu_ms"].get<double>(), WithinAbs(i == 2 ? 0.047 : 0.040, 1e-9));
  }
  CHECK_THAT(ph["nccl_ms_per_step"]["ncclDevKernel_ReduceScatter_Sum_f32_RING_LL"].get<double>(), WithinAbs(0.007, 1e-9));

  REQUIRE(std::system(("python3 '" + scripts + "profile_summary.py' --steps 2 --json '" + d.file("summary.json") + "' run='" +
                       trace + "' > '" + d.file("summary.txt") + "'").c_str()) == 0);
  const auto cls = nlohmann::json::parse(read_text(d.file("summary.json")))["run"]["by_class_ms_per_step"];
  CHECK_THAT(cls["nccl"].get<double>(), WithinAbs(0.007, 1e-9));  // not "reduce"
  CHECK_FALSE(cls.contains("reduce"));
}

TEST_CASE("profile_summary.py --ops puts each kernel's time under the CPU ops around its launch") {
  auto events = nlohmann::json::array();
  auto op = [&](const std::string& name, double ts, double dur) {
    events.push_back({{"ph", "X"}, {"cat", "cpu_op"}, {"name", name}, {"ts", ts}, {"dur", dur}});
  };
  auto kernel = [&](int corr, const std::string& name, double launch, double dur) {
    events.push_back({{"ph", "X"}, {"cat", "cuda_runtime"}, {"name", "cudaLaunchKernel"}, {"ts", launch},
                      {"dur", 1}, {"args", {{"correlation", corr}}}});
    events.push_back({{"ph", "X"}, {"cat", "kernel"}, {"name", name}, {"ts", 2000.0 + 100 * corr}, {"dur", dur},
                      {"args", {{"correlation", corr}}}});
  };
  op("efftrain::step", 0, 1000);
  op("aten::to", 10, 100);
  op("aten::_to_copy", 11, 90);
  op("aten::copy_", 12, 80);
  op("aten::add_", 200, 50);
  kernel(1, "direct_copy_kernel", 15, 30);  // four ops deep: the three innermost and the outermost
  kernel(2, "add_kernel", 210, 10);
  kernel(3, "fill_kernel", 500, 5);  // inside the step only
  kernel(4, "another_add", 240, 20);
  TempDir d;
  const std::string trace = d.write("trace.json", nlohmann::json{{"traceEvents", events}}.dump());
  const std::string scripts = EFFTRAIN_SOURCE_DIR "/scripts/";
  REQUIRE(std::system(("python3 '" + scripts + "profile_summary.py' --steps 1 --ops --json '" + d.file("summary.json") +
                       "' run='" + trace + "' > '" + d.file("summary.txt") + "'").c_str()) == 0);
  const auto rows = nlohmann::json::parse(read_text(d.file("summary.json")))["run"]["by_op_ms_per_step"];
  std::map<std::string, std::pair<std::string, double>> by_kernel;
  for (const auto& r : rows) by_kernel[r[0].get<std::string>()] = {r[1].get<std::string>(), r[2].get<double>()};
  REQUIRE(by_kernel.size() == 4);
  CHECK(by_kernel["direct_copy_kernel"].first == "aten::copy_ < aten::_to_copy < aten::to < efftrain::step");
  CHECK_THAT(by_kernel["direct_copy_kernel"].second, WithinAbs(0.030, 1e-9));
  CHECK(by_kernel["add_kernel"].first == "aten::add_ < efftrain::step");
  CHECK(by_kernel["another_add"].first == "aten::add_ < efftrain::step");
  CHECK(by_kernel["fill_kernel"].first == "efftrain::step");
  CHECK_THAT(by_kernel["fill_kernel"].second, WithinAbs(0.005, 1e-9));
}

TEST_CASE("memory_summary.py finds the peak of a made-up allocator snapshot and groups what is live there by code") {
  // A block live before recording (1000 B, still live at the dump); then a (300 B, frames f < g),
  // b (200 B, frames h), a freed, c (400 B, frames f < g), c freed. Live: 1000 + 300 + 200 = 1500
  // after b, 1000 + 200 + 400 = 1600 after c: the peak, with b and c live.
  TempDir d;
  const std::string py = R"PY(
import pickle, sys
fr = lambda *names: [{"name": n + "(int)", "filename": "x.cpp", "line": 1} for n in names]
trace = [
  {"action": "alloc", "addr": 100, "size": 300, "frames": fr("at::empty", "efftrain::f", "efftrain::g")},
  {"action": "alloc", "addr": 200, "size": 200, "frames": fr("efftrain::h")},
  {"action": "free_requested", "addr": 100, "size": 300},
  {"action": "free_completed", "addr": 100, "size": 300},
  {"action": "alloc", "addr": 300, "size": 400, "frames": fr("efftrain::f", "efftrain::g")},
  {"action": "free_completed", "addr": 300, "size": 400},
]
segments = [{"address": 0, "blocks": [{"size": 1000, "state": "active_allocated"}]},
            {"address": 200, "blocks": [{"size": 200, "state": "active_allocated"}]}]
pickle.dump({"segments": segments, "device_traces": [trace]}, open(sys.argv[1], "wb"))
)PY";
  const std::string maker = d.write("make.py", py);
  REQUIRE(std::system(("python3 '" + maker + "' '" + d.file("s.pickle") + "'").c_str()) == 0);
  REQUIRE(std::system(("python3 '" EFFTRAIN_SOURCE_DIR "/scripts/memory_summary.py' '" + d.file("s.pickle") +
                       "' --json '" + d.file("m.json") + "' > '" + d.file("m.txt") + "'")
                          .c_str()) == 0);
  const auto j = nlohmann::json::parse(read_text(d.file("m.json")));
  CHECK(j["peak_bytes"] == 1600);
  CHECK(j["peak_event"] == 4);
  CHECK(j["before_recording_bytes"] == 1000);
  std::map<std::string, int64_t> by_code;
  for (const auto& g : j["groups"]) by_code[g["code"].get<std::string>()] = g["bytes"].get<int64_t>();
  CHECK(by_code == std::map<std::string, int64_t>{
                       {"efftrain::f < efftrain::g", 400}, {"efftrain::h", 200}, {"(live before recording began)", 1000}});
}

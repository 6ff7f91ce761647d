// GPU-only checks (ctest label "gpu"; CI has no GPU and skips them).
#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include "efftrain/models/models.h"

using namespace efftrain;

TEST_CASE("channels_last makes cuDNN run NHWC convolutions", "[gpu]") {
  REQUIRE(torch::cuda::is_available());
  auto run = [](bool channels_last) {
    torch::manual_seed(0);
    auto m = std::make_shared<models::ResNetImpl>(3, 16, std::vector<int64_t>{1, 1}, 10, false);
    m->to(torch::kCUDA);
    auto x = torch::randn({8, 3, 32, 32}, torch::kCUDA);
    if (channels_last) {
      torch::NoGradGuard ng;
      for (auto& p : m->parameters())
        if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
      x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    auto h = m->stem(x);  // a cuDNN convolution: its output layout is the kernel's layout
    return std::make_pair(h.is_contiguous(torch::MemoryFormat::ChannelsLast) && !h.is_contiguous(),
                          m->forward(x).cpu());
  };
  auto [nhwc_off, y_off] = run(false);
  auto [nhwc_on, y_on] = run(true);
  CHECK_FALSE(nhwc_off);
  CHECK(nhwc_on);
  CHECK(torch::allclose(y_off, y_on, 1e-3, 1e-3));  // same function, different kernels
}

// efftrain: declarations for ProcessGroupGloo.hpp only (see ../../README.md).
#pragma once

namespace gloo::transport {
class Device;         // held by std::shared_ptr
class UnboundBuffer;  // held by std::unique_ptr in ProcessGroupGloo's send/recv work
}  // namespace gloo::transport

// The one logger (spdlog behind it). Torch-free on purpose: LibTorch ships its own fmt, which
// clashes with the system spdlog's, so spdlog is only ever compiled in core/log.cpp, in a
// target that does not see Torch's include folder. Format messages with efftrain::strf.
#pragma once

#include <string>

namespace efftrain::log {

// Prefix every line with "[rankN] " (multi-process runs); empty = no prefix.
void set_prefix(const std::string& prefix);
// Only warnings and errors (ranks other than 0 of a multi-process run).
void set_quiet(bool quiet);
void info(const std::string& message);
void warn(const std::string& message);
void error(const std::string& message);

}  // namespace efftrain::log

namespace efftrain {
// printf-style formatting into a std::string.
std::string strf(const char* format, ...) __attribute__((format(printf, 1, 2)));
}  // namespace efftrain

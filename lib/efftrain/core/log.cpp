#include "efftrain/core/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdarg>
#include <vector>

namespace efftrain::log {

namespace {
std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = spdlog::stderr_logger_mt("efftrain");
    lg->set_pattern("[%H:%M:%S] %v");
    return lg;
  }();
  return l;
}
std::string& prefix() {
  static std::string p;
  return p;
}
}  // namespace

void set_prefix(const std::string& p) { prefix() = p; }
void set_quiet(bool quiet) { logger()->set_level(quiet ? spdlog::level::warn : spdlog::level::info); }
void info(const std::string& m) { logger()->info("{}{}", prefix(), m); }
void warn(const std::string& m) { logger()->warn("{}{}", prefix(), m); }
void error(const std::string& m) { logger()->error("{}{}", prefix(), m); }

}  // namespace efftrain::log

namespace efftrain {
std::string strf(const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  std::vector<char> buf(static_cast<size_t>(n > 0 ? n : 0) + 1);
  std::vsnprintf(buf.data(), buf.size(), format, args);
  va_end(args);
  return std::string(buf.data(), static_cast<size_t>(n > 0 ? n : 0));
}
}  // namespace efftrain

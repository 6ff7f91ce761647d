// efftrain: declarations for ProcessGroupGloo.hpp only (see ../../README.md).
#pragma once

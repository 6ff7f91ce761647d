// efftrain: declarations for ProcessGroupGloo.hpp only (see ../README.md).
#pragma once
#include "gloo/context.h"

// Umbrella header: the whole public API of warpload.
#pragma once

#include "warpload/chunked.hpp"
#include "warpload/collective.hpp"
#include "warpload/config.hpp"
#include "warpload/device.hpp"
#include "warpload/distributed.hpp"
#include "warpload/dtype.hpp"
#include "warpload/error.hpp"
#include "warpload/format.hpp"
#include "warpload/loader.hpp"
#include "warpload/memory.hpp"
#include "warpload/plan.hpp"
#include "warpload/storage.hpp"
#include "warpload/tensor_view.hpp"
#include "warpload/version.hpp"

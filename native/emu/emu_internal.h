// Between the execution model (emu.cpp) and the driver-style C API (api.cpp).
#pragma once

#include "emu_device.h"

#include <string>

namespace lori_emu {

// Runs the whole grid (blocks in parallel on the pool) and returns when every block is done.
// False, with a message, when a block failed (trap, deadlock, out of memory).
bool launch_grid(Trampoline tramp, void** args, dim3 grid, dim3 block, size_t dynamic_bytes, std::string& error);

void set_thread_count(unsigned n);
unsigned thread_count();

} // namespace lori_emu

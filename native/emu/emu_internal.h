// Between the execution model (emu.cpp) and the driver-style C API (api.cpp).
#pragma once

#include "emu_device.h"

#include <string>

namespace lori_emu {

// Runs the whole grid (blocks in parallel on the pool) and returns when every block is done.
// False, with a message, when a block failed (trap, deadlock, out of memory).
bool launch_grid(Trampoline tramp, void** args, dim3 grid, dim3 block, size_t dynamic_bytes, std::string& error);

void set_thread_count(unsigned n);

// Per-block state of the sm_90a twins (emu_sm90.cpp), on the block's OS thread: reset before a block
// runs; after it, a non-empty message names what the block left unfinished (wgmma groups never waited).
void sm90_block_begin(unsigned warps);
std::string sm90_block_end();
unsigned thread_count();

} // namespace lori_emu

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
// The emulator's CUtensorMap (128 bytes, what lemu_tensor_map_encode_tiled writes and the bulk tensor
// copy's twin reads): dimensions innermost first, strides in bytes of dimensions 1.., box and element
// strides stored minus one.
struct EmuTensorMap
{
    static constexpr uint32_t kMagic = 0x504d544cu;  // "LTMP"
    uint32_t magic;
    uint8_t dtype, rank, elem_bytes, swizzle, interleave, l2_promotion, oob_fill, reserved;
    uint32_t reserved2;
    uint64_t address;
    uint64_t dims[5];
    uint64_t strides[4];
    uint8_t box_minus_1[5];
    uint8_t element_strides_minus_1[5];
};
static_assert(sizeof(EmuTensorMap) <= 128, "a CUtensorMap is 128 bytes");

void sm90_block_begin(unsigned warps);
std::string sm90_block_end();
unsigned thread_count();

} // namespace lori_emu

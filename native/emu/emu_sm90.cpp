// Host twins of the sm_90a instructions in native/include/lori_sm90.cuh.
//
// wgmma.mma_async (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"): a warpgroup of
// four warps computes a 64 x N tile; warp w of the group owns rows 16 w .. 16 w + 15 of D and of A, and
// its rows depend on nothing the other three warps hold. So each warp is emulated on its own, as a warp
// collective over its 32 lanes, reading its 16 rows of A and all of B from shared memory.
//
// The asynchrony is kept: an issued wgmma joins the warp's open group, wgmma.commit_group closes the
// group, and wgmma.wait_group N runs the oldest groups until at most N remain. Operands are read and
// accumulators written only then, which is the latest moment the hardware may do either, so a kernel
// that overwrites a stage (or reads an accumulator) before waiting gets a wrong result here too. A block
// that exits with groups never waited fails the launch.
//
// mbarrier: the 8-byte object in shared memory holds, in this emulator's encoding, the pending arrival
// count (bits 0-20), the expected count (21-41), the tx-count (42-62, signed) and the current phase's
// parity (63). A phase completes when both counts reach zero; then the pending count is reset and the
// parity flips. try_wait.parity P succeeds once the phase of parity P has completed, i.e. while the
// current parity differs from P; a failed try_wait lets the block's other threads run (spin_wait).
//
// The bulk tensor copy (cp.async.bulk.tensor, "TMA") reads the tensor map that api.cpp's
// lemu_tensor_map_encode_tiled wrote (EmuTensorMap), copies the box at once and signals complete_tx.
#include "emu_device.h"
#include "emu_internal.h"

#include <cstdio>
#include <deque>
#include <string>
#include <vector>

namespace lori_emu {

namespace {

struct WgmmaOp
{
    float* d[32];       // each lane's accumulator registers
    int n;              // N of m64nNk16
    uint64_t desc_a, desc_b;
    int scale_d;
};

struct WarpAsync
{
    std::vector<WgmmaOp> open;
    std::deque<std::vector<WgmmaOp>> groups;
};

thread_local std::vector<WarpAsync> t_warps;

// A shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format"): start address, leading and
// stride byte offsets (all >> 4, 14 bits each at bits 0, 16, 32), base offset (bits 49-51), swizzle
// mode (bits 62-63: 0 none, 1 128B, 2 64B, 3 32B).
struct Descriptor
{
    uint32_t start, lbo, sbo, base_offset, swizzle;
};

Descriptor decode(uint64_t d)
{
    return {(uint32_t)(d & 0x3fff) << 4, (uint32_t)((d >> 16) & 0x3fff) << 4, (uint32_t)((d >> 32) & 0x3fff) << 4,
            (uint32_t)((d >> 49) & 7), (uint32_t)(d >> 62)};
}

// Byte address of bf16 element (row, k), k < 16, of a K-major operand in the 128-byte swizzle layout:
// rows of 128 bytes, 8-row groups `sbo` apart, then bits 4-6 of the address XOR bits 7-9.
uint32_t sw128_address(const Descriptor& d, unsigned row, unsigned k)
{
    const uint32_t linear = d.start + (row / 8) * d.sbo + (row % 8) * 128 + k * 2;
    return linear ^ (((linear >> 7) & 7u) << 4);
}

// The operand checks done when the wgmma is issued, so a bad descriptor traps at the instruction.
const char* check_descriptor(uint64_t raw, unsigned rows)
{
    const Descriptor d = decode(raw);
    if (d.swizzle != 1) return "wgmma: only the 128-byte swizzle layout (mode 1) is emulated";
    if (d.base_offset != 0) return "wgmma: a non-zero matrix base offset is not emulated";
    if (d.sbo != 1024) return "wgmma: the 128-byte swizzle K-major layout needs a stride byte offset of 1024";
    if ((d.start & 127) > 96) return "wgmma: start address leaves no room for 16 K elements in the 128-byte row";
    const size_t last = (size_t)d.start + ((rows - 1) / 8) * d.sbo + 7 * 128 + 32;
    if (last > t_block->dynamic_smem_bytes) return "wgmma: operand tile reaches past the block's dynamic shared memory";
    return nullptr;
}

float bf16_at(uint32_t address)
{
    uint16_t h;
    std::memcpy(&h, t_block->dynamic_smem + address, 2);
    return __uint_as_float((uint32_t)h << 16);
}

void run(const WgmmaOp& op, unsigned warp)
{
    const Descriptor a = decode(op.desc_a), b = decode(op.desc_b);
    const unsigned row0 = 16 * (warp % 4);
    float A[16][16];
    for (unsigned r = 0; r < 16; r++)
        for (unsigned k = 0; k < 16; k++) A[r][k] = bf16_at(sw128_address(a, row0 + r, k));
    std::vector<float> B((size_t)op.n * 16);
    for (int c = 0; c < op.n; c++)
        for (unsigned k = 0; k < 16; k++) B[(size_t)c * 16 + k] = bf16_at(sw128_address(b, (unsigned)c, k));
    for (unsigned r = 0; r < 16; r++)
        for (int c = 0; c < op.n; c++)
        {
            const unsigned lane = (r % 8) * 4 + (unsigned)(c % 8) / 2;
            const unsigned reg = 4 * (unsigned)(c / 8) + 2 * (r / 8) + (unsigned)(c % 2);
            float s = op.scale_d ? op.d[lane][reg] : 0.f;
            for (unsigned k = 0; k < 16; k++) s += A[r][k] * B[(size_t)c * 16 + k];
            op.d[lane][reg] = s;
        }
}

struct IssuePayload { float* d; int n; uint64_t desc_a, desc_b; int scale_d; unsigned warp; };
struct GroupPayload { unsigned warp; int pending; };

bool same_operands(void* const* p)
{
    auto* first = static_cast<IssuePayload*>(p[0]);
    for (unsigned l = 1; l < 32; l++)
    {
        auto* me = static_cast<IssuePayload*>(p[l]);
        if (me->desc_a != first->desc_a || me->desc_b != first->desc_b || me->scale_d != first->scale_d || me->n != first->n) return false;
    }
    return true;
}

void resolve_issue(void* const* p, unsigned participants)
{
    if (participants != 0xffffffffu || !same_operands(p))
    {
        // every lane traps on return (see wgmma_m64nNk16_bf16_f32)
        for (unsigned l = 0; l < 32; l++)
            if (participants & (1u << l)) static_cast<IssuePayload*>(p[l])->n = -1;
        return;
    }
    auto* first = static_cast<IssuePayload*>(p[0]);
    WgmmaOp op{};
    for (unsigned l = 0; l < 32; l++) op.d[l] = static_cast<IssuePayload*>(p[l])->d;
    op.n = first->n;
    op.desc_a = first->desc_a;
    op.desc_b = first->desc_b;
    op.scale_d = first->scale_d;
    t_warps[first->warp].open.push_back(op);
}

void resolve_commit(void* const* p, unsigned participants)
{
    if (participants != 0xffffffffu)
    {
        for (unsigned l = 0; l < 32; l++)
            if (participants & (1u << l)) static_cast<GroupPayload*>(p[l])->pending = -1;
        return;
    }
    auto& w = t_warps[static_cast<GroupPayload*>(p[0])->warp];
    w.groups.push_back(std::move(w.open));
    w.open.clear();
}

void resolve_wait(void* const* p, unsigned participants)
{
    if (participants != 0xffffffffu)
    {
        for (unsigned l = 0; l < 32; l++)
            if (participants & (1u << l)) static_cast<GroupPayload*>(p[l])->pending = -1;
        return;
    }
    auto* first = static_cast<GroupPayload*>(p[0]);
    auto& w = t_warps[first->warp];
    while ((int)w.groups.size() > first->pending)
    {
        for (const auto& op : w.groups.front()) run(op, first->warp);
        w.groups.pop_front();
    }
}

struct Mbarrier
{
    uint32_t pending, expected;
    int32_t tx;
    uint32_t phase;
};

uint64_t* mbarrier_word(uint32_t bar)
{
    if (bar % 8 != 0) trap("mbarrier: the address is not 8-byte aligned");
    if ((size_t)bar + 8 > t_block->dynamic_smem_bytes) trap("mbarrier: the object lies past the block's dynamic shared memory");
    return reinterpret_cast<uint64_t*>(t_block->dynamic_smem + bar);
}

Mbarrier mbarrier_load(uint32_t bar)
{
    uint64_t w;
    std::memcpy(&w, mbarrier_word(bar), 8);
    Mbarrier m;
    m.pending = (uint32_t)(w & 0x1fffff);
    m.expected = (uint32_t)((w >> 21) & 0x1fffff);
    const uint32_t tx = (uint32_t)((w >> 42) & 0x1fffff);
    m.tx = (tx & 0x100000u) ? (int32_t)tx - 0x200000 : (int32_t)tx;
    m.phase = (uint32_t)(w >> 63);
    if (m.expected == 0) trap("mbarrier: used before mbarrier.init");
    return m;
}

void mbarrier_store(uint32_t bar, Mbarrier m)
{
    if (m.tx >= 0x100000 || m.tx <= -0x100000) trap("mbarrier: tx-count outside its range of +-(2^20 - 1)");
    if (m.pending == 0 && m.tx == 0)
    {
        m.phase ^= 1u;
        m.pending = m.expected;
    }
    const uint64_t w = (uint64_t)m.pending | ((uint64_t)m.expected << 21) | ((uint64_t)((uint32_t)m.tx & 0x1fffffu) << 42) | ((uint64_t)m.phase << 63);
    std::memcpy(mbarrier_word(bar), &w, 8);
    note_sync_progress();
}

void mbarrier_arrive_one(uint32_t bar, int32_t expect_tx)
{
    Mbarrier m = mbarrier_load(bar);
    m.tx += expect_tx;
    if (m.pending == 0) trap("mbarrier: arrive with no pending arrival");
    m.pending--;
    mbarrier_store(bar, m);
}

uint32_t swizzle_address(uint32_t linear, unsigned mode)
{
    return mode == 3 ? linear ^ (((linear >> 7) & 7u) << 4) : linear;
}

} // namespace

void mbarrier_init(uint32_t bar, unsigned count)
{
    if (count < 1 || count > 0xfffff) trap("mbarrier.init: the count must be in [1, 2^20 - 1]");
    const uint64_t w = (uint64_t)count | ((uint64_t)count << 21);
    std::memcpy(mbarrier_word(bar), &w, 8);
}

void mbarrier_arrive_expect_tx(uint32_t bar, unsigned bytes)
{
    if (bytes > 0xfffff) trap("mbarrier.arrive.expect_tx: tx-count above 2^20 - 1");
    mbarrier_arrive_one(bar, (int32_t)bytes);
}

void mbarrier_arrive(uint32_t bar) { mbarrier_arrive_one(bar, 0); }

bool mbarrier_try_wait_parity(uint32_t bar, unsigned parity)
{
    if (mbarrier_load(bar).phase != (parity & 1u)) return true;
    spin_wait();
    return false;
}

void tma_load_2d(uint32_t dst, const void* tensor_map, int c0, int c1, uint32_t bar)
{
    EmuTensorMap tm;
    std::memcpy(&tm, tensor_map, sizeof tm);
    if (tm.magic != EmuTensorMap::kMagic) trap("cp.async.bulk.tensor: the tensor map was not made by cuTensorMapEncodeTiled");
    if (tm.rank != 2) trap("cp.async.bulk.tensor.2d: the tensor map's rank is not 2");
    if (tm.swizzle != 0 && tm.swizzle != 3) trap("cp.async.bulk.tensor: only no swizzle and the 128-byte swizzle are emulated");
    if (tm.interleave != 0 || tm.oob_fill != 0) trap("cp.async.bulk.tensor: interleaved maps and NaN out-of-bound fill are not emulated");
    if (tm.element_strides_minus_1[0] != 0 || tm.element_strides_minus_1[1] != 0) trap("cp.async.bulk.tensor: element strides other than 1 are not emulated");
    if (dst % 128 != 0) trap("cp.async.bulk.tensor: the shared-memory destination is not 128-byte aligned");
    const unsigned es = tm.elem_bytes, box0 = tm.box_minus_1[0] + 1u, box1 = tm.box_minus_1[1] + 1u;
    const size_t bytes = (size_t)box0 * box1 * es;
    if ((size_t)dst + bytes > t_block->dynamic_smem_bytes) trap("cp.async.bulk.tensor: the box reaches past the block's dynamic shared memory");
    const unsigned char* global = reinterpret_cast<const unsigned char*>((uintptr_t)tm.address);
    for (unsigned i1 = 0; i1 < box1; i1++)
        for (unsigned i0 = 0; i0 < box0; i0++)
        {
            const long long g0 = (long long)c0 + i0, g1 = (long long)c1 + i1;
            unsigned char* out = t_block->dynamic_smem + swizzle_address(dst + (uint32_t)((i1 * box0 + i0) * es), tm.swizzle);
            if (g0 >= 0 && g1 >= 0 && (uint64_t)g0 < tm.dims[0] && (uint64_t)g1 < tm.dims[1])
                std::memcpy(out, global + (uint64_t)g1 * tm.strides[0] + (uint64_t)g0 * es, es);
            else
                std::memset(out, 0, es);
        }
    Mbarrier m = mbarrier_load(bar);
    m.tx -= (int32_t)bytes;
    mbarrier_store(bar, m);
}

void sm90_block_begin(unsigned warps)
{
    t_warps.assign(warps, WarpAsync{});
}

std::string sm90_block_end()
{
    for (size_t i = 0; i < t_warps.size(); i++)
        if (!t_warps[i].groups.empty() || !t_warps[i].open.empty())
        {
            char buf[160];
            std::snprintf(buf, sizeof buf, "warp %zu exited with %zu wgmma group(s) never waited for (and %zu uncommitted)",
                          i, t_warps[i].groups.size(), t_warps[i].open.size());
            return buf;
        }
    return "";
}

uint32_t shared_offset(const void* p)
{
    const auto* c = static_cast<const unsigned char*>(p);
    const unsigned char* base = t_block->dynamic_smem;
    if (!base || c < base || c > base + t_block->dynamic_smem_bytes)
        trap("a shared-memory address was taken of memory outside the block's dynamic shared memory");
    return (uint32_t)(c - base);
}

void wgmma_m64nNk16_bf16_f32(float* d, int n, uint64_t desc_a, uint64_t desc_b, int scale_d)
{
    if (n < 8 || n > 256 || n % 8 != 0) trap("wgmma: N must be a multiple of 8 from 8 to 256");
    if (const char* bad = check_descriptor(desc_a, 64)) trap(bad);
    if (const char* bad = check_descriptor(desc_b, (unsigned)n)) trap(bad);
    IssuePayload p{d, n, desc_a, desc_b, scale_d, t_thread->warp};
    warp_collective(0xffffffffu, &p, resolve_issue);
    if (p.n < 0) trap("wgmma.mma_async needs all 32 lanes of every warp with the same descriptors");
}

void wgmma_commit_group()
{
    GroupPayload p{t_thread->warp, 0};
    warp_collective(0xffffffffu, &p, resolve_commit);
    if (p.pending < 0) trap("wgmma.commit_group needs all 32 lanes of the warp");
}

void wgmma_wait_group(int pending)
{
    if (pending < 0 || pending > 7) trap("wgmma.wait_group: N must be in [0, 7]");
    GroupPayload p{t_thread->warp, pending};
    warp_collective(0xffffffffu, &p, resolve_wait);
    if (p.pending < 0) trap("wgmma.wait_group needs all 32 lanes of the warp");
}

} // namespace lori_emu

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

} // namespace

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

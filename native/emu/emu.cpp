// The CUDA execution model on the CPU.
//
// A launch is a grid of blocks. Blocks are taken from a shared counter by a small pool of OS threads
// (the caller included), so blocks run in parallel and in no fixed order, as on a GPU. Inside one OS
// thread a block's threads are cooperative fibers (see context switching below): each runs until it reaches a
// synchronisation point (__syncthreads, a warp collective) or returns, then yields to the block's
// scheduler. The scheduler runs warp by warp; a warp collective completes when every lane of its
// mask has arrived, and __syncthreads when every live thread of the block has. A block in which no
// thread can make progress (a barrier that not all threads reach, a collective with a lane that
// exited) fails the launch with a message naming the threads, instead of hanging.
//
// Under AddressSanitizer every fiber switch is annotated (__sanitizer_start/finish_switch_fiber).
#include "emu_device.h"
#include "emu_internal.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define LORI_EMU_ASAN 1
#else
#define LORI_EMU_ASAN 0
#endif

// ---- context switching ---------------------------------------------------------------------------
// On x86-64 a fiber switch saves the callee-saved registers and the FP control words on the old stack
// and swaps stack pointers (no system call, unlike swapcontext's signal-mask save). Elsewhere, or with
// -DLORI_EMU_UCONTEXT, ucontext does the same job more slowly.
#if defined(__x86_64__) && !defined(LORI_EMU_UCONTEXT)
#define LORI_EMU_FAST_SWITCH 1
extern "C" void lori_emu_switch(void** save_sp, void* next_sp);
asm(R"(
    .text
    .globl lori_emu_switch
    .hidden lori_emu_switch
    .type lori_emu_switch,@function
lori_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size lori_emu_switch, .-lori_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");

namespace {
struct Context { void* sp = nullptr; };

// A fresh context that starts in entry() on the given stack, with the caller's FP control words.
void context_init(Context& c, unsigned char* stack, size_t size, void (*entry)())
{
    uintptr_t top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;                                   // entry's return address: it never returns
    *--sp = reinterpret_cast<uint64_t>(entry);   // where the switch's `ret` goes
    for (int i = 0; i < 6; i++) *--sp = 0;       // rbp rbx r12 r13 r14 r15
    --sp;
    uint32_t mxcsr;
    uint16_t fpcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpcw));
    std::memcpy(sp, &mxcsr, 4);
    std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpcw, 2);
    c.sp = sp;
}
inline void context_switch(Context& from, Context& to) { lori_emu_switch(&from.sp, to.sp); }
[[noreturn]] inline void context_jump(Context& to)
{
    void* discard;
    lori_emu_switch(&discard, to.sp);
    __builtin_unreachable();
}
} // namespace
#else
#define LORI_EMU_FAST_SWITCH 0
namespace {
struct Context { ucontext_t uc; };
void context_init(Context& c, unsigned char* stack, size_t size, void (*entry)())
{
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
inline void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
[[noreturn]] inline void context_jump(Context& to)
{
    setcontext(&to.uc);
    std::abort();
}
} // namespace
#endif

namespace lori_emu {

thread_local ThreadCtx* t_thread = nullptr;
thread_local BlockCtx* t_block = nullptr;
thread_local unsigned long long t_sync_epoch = 0;

void note_sync_progress() { t_sync_epoch++; }

namespace {

enum class State { Runnable, Spinning, AtBarrier, AtWarp, Done };

struct Fiber
{
    Context ctx;
    unsigned char* stack = nullptr;  // usable stack (above the guard page)
    size_t stack_size = 0;
    ThreadCtx tc{};
    State state = State::Done;
    // warp collective in progress
    unsigned warp_mask = 0;
    void* warp_payload = nullptr;
    WarpResolve warp_resolve = nullptr;
#if LORI_EMU_ASAN
    void* fake_stack = nullptr;
#endif
};

size_t fiber_stack_bytes()
{
    static size_t bytes = [] {
        const char* s = std::getenv("LORI_EMU_STACK_KB");
        long kb = s ? std::atol(s) : 0;
        if (kb <= 0) kb = LORI_EMU_ASAN ? 256 : 128;
        return (size_t)kb * 1024;
    }();
    return bytes;
}

// Per OS thread: the fibers it reuses from block to block and the scheduler's own context.
struct Worker
{
    std::vector<std::unique_ptr<Fiber>> fibers;
    Context scheduler;
    Fiber* current = nullptr;
    Trampoline tramp = nullptr;
    void** args = nullptr;
    bool aborted = false;
    std::string error;
#if LORI_EMU_ASAN
    const void* sched_stack_bottom = nullptr;
    size_t sched_stack_size = 0;
#endif

    ~Worker()
    {
        for (auto& f : fibers)
            if (f->stack) munmap(f->stack - page(), f->stack_size + page());
    }

    static size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }

    void ensure(size_t n)
    {
        while (fibers.size() < n)
        {
            auto f = std::make_unique<Fiber>();
            size_t bytes = fiber_stack_bytes();
            void* mem = mmap(nullptr, bytes + page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (mem == MAP_FAILED) throw std::bad_alloc();
            mprotect(mem, page(), PROT_NONE);  // guard page: a stack overflow faults instead of corrupting
            f->stack = static_cast<unsigned char*>(mem) + page();
            f->stack_size = bytes;
            fibers.push_back(std::move(f));
        }
    }
};

std::string thread_name(const ThreadCtx& t)
{
    char buf[64];
    std::snprintf(buf, sizeof buf, "thread (%u,%u,%u)", t.thread_idx.x, t.thread_idx.y, t.thread_idx.z);
    return buf;
}

thread_local Worker* t_worker = nullptr;
thread_local std::unique_ptr<Worker> t_worker_owner;  // lives as long as the OS thread; fibers are reused

Worker& worker()
{
    if (!t_worker)
    {
        t_worker_owner = std::make_unique<Worker>();
        t_worker = t_worker_owner.get();
    }
    return *t_worker;
}

// Marks the running block failed; the first message wins.
void report(const std::string& what)
{
    Worker& w = *t_worker;
    if (w.aborted) return;
    w.aborted = true;
    w.error = w.current ? thread_name(w.current->tc) + ": " + what : what;
}

// ---- switching -------------------------------------------------------------------------------

void switch_to_fiber(Worker& w, Fiber& f)
{
    w.current = &f;
    t_thread = &f.tc;
#if LORI_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, f.stack_size);
    context_switch(w.scheduler, f.ctx);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    context_switch(w.scheduler, f.ctx);
#endif
    w.current = nullptr;
    t_thread = nullptr;
}

// Called on a fiber: suspend it and return to the scheduler.
void yield_to_scheduler()
{
    Worker& w = *t_worker;
    Fiber& f = *w.current;
#if LORI_EMU_ASAN
    __sanitizer_start_switch_fiber(&f.fake_stack, w.sched_stack_bottom, w.sched_stack_size);
    context_switch(f.ctx, w.scheduler);
    __sanitizer_finish_switch_fiber(f.fake_stack, &w.sched_stack_bottom, &w.sched_stack_size);
#else
    context_switch(f.ctx, w.scheduler);
#endif
}

// Called on a fiber that will never run again (returned or trapped).
[[noreturn]] void exit_fiber()
{
    Worker& w = *t_worker;
    Fiber& f = *w.current;
    f.state = State::Done;
#if LORI_EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, w.sched_stack_bottom, w.sched_stack_size);
#endif
    context_jump(w.scheduler);
}

void fiber_entry()
{
    Worker& w = *t_worker;
#if LORI_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &w.sched_stack_bottom, &w.sched_stack_size);
#endif
    w.tramp(w.args);
    exit_fiber();
}

const char* state_name(State s)
{
    switch (s)
    {
        case State::Runnable: return "running";
        case State::Spinning: return "spinning on a wait that never completes (an mbarrier)";
        case State::AtBarrier: return "waiting at __syncthreads";
        case State::AtWarp: return "waiting at a warp collective";
        case State::Done: return "exited";
    }
    return "?";
}

// Try to complete the collective that `lead` waits at. True when it did.
bool resolve_warp_op(Fiber** lanes, unsigned lane_count, Fiber& lead, std::string& problem)
{
    unsigned mask = lead.warp_mask;
    void* payloads[32] = {};
    unsigned participants = 0;
    for (unsigned l = 0; l < lane_count; l++)
    {
        if (!(mask & (1u << l))) continue;
        Fiber& f = *lanes[l];
        if (f.state == State::AtWarp && f.warp_resolve == lead.warp_resolve && f.warp_mask == mask)
        {
            payloads[l] = f.warp_payload;
            participants |= 1u << l;
            continue;
        }
        if (f.state == State::Runnable || f.state == State::Spinning) return false;
        char buf[200];
        std::snprintf(buf, sizeof buf, "lane %u of warp %u is in the mask 0x%08x of a warp collective but is %s",
                      l, lead.tc.warp, mask, f.state == State::AtWarp ? "at a different warp collective" : state_name(f.state));
        problem = buf;
        return false;
    }
    lead.warp_resolve(payloads, participants);
    for (unsigned l = 0; l < lane_count; l++)
        if (participants & (1u << l)) lanes[l]->state = State::Runnable;
    return true;
}

void run_block(Worker& w, Trampoline tramp, void** args, BlockCtx& block)
{
    const unsigned bx = block.block_dim.x, by = block.block_dim.y;
    const unsigned n = bx * by * block.block_dim.z;
    w.ensure(n);
    w.tramp = tramp;
    w.args = args;
    w.aborted = false;
    t_block = &block;
    for (unsigned i = 0; i < n; i++)
    {
        Fiber& f = *w.fibers[i];
        f.tc.thread_idx = {i % bx, (i / bx) % by, i / (bx * by)};
        f.tc.linear = i;
        f.tc.lane = i & 31u;
        f.tc.warp = i >> 5;
        f.state = State::Runnable;
        f.warp_resolve = nullptr;
#if LORI_EMU_ASAN
        // frames abandoned by an earlier block (a trap, an exit) may have left redzones poisoned
        __asan_unpoison_memory_region(f.stack, f.stack_size);
#endif
        context_init(f.ctx, f.stack, f.stack_size, fiber_entry);
    }

    const unsigned warps = (n + 31) / 32;
    sm90_block_begin(warps);
    // Odd blocks run their warps and lanes in reverse order: between two barriers, a thread that reads
    // shared memory another thread writes without a __syncthreads then sees the stale value in one of
    // the two orders, so a missing barrier shows up as a wrong result instead of passing by luck.
    const unsigned long long linear_block = block.block_idx.x +
        (unsigned long long)block.grid_dim.x * (block.block_idx.y + (unsigned long long)block.grid_dim.y * block.block_idx.z);
    const bool reverse = (linear_block & 1) != 0;
    std::vector<Fiber*> lanes(32);
    for (;;)
    {
        bool progress = false;
        std::string problem;
        for (unsigned wn = 0; wn < warps && !w.aborted; wn++)
        {
            const unsigned wi = reverse ? warps - 1 - wn : wn;
            const unsigned base = wi * 32, count = std::min(32u, n - base);
            for (unsigned l = 0; l < count; l++) lanes[l] = w.fibers[base + l].get();
            bool again = true;
            while (again && !w.aborted)
            {
                again = false;
                for (unsigned ln = 0; ln < count && !w.aborted; ln++)
                {
                    const unsigned l = reverse ? count - 1 - ln : ln;
                    if (lanes[l]->state == State::Runnable)
                    {
                        switch_to_fiber(w, *lanes[l]);
                        progress = true;
                    }
                    else if (lanes[l]->state == State::Spinning)
                    {
                        // a spin-wait that fails again (yields Spinning again, having changed no shared
                        // synchronisation state on the way) is no progress
                        lanes[l]->state = State::Runnable;
                        const unsigned long long epoch = t_sync_epoch;
                        switch_to_fiber(w, *lanes[l]);
                        if (lanes[l]->state != State::Spinning || t_sync_epoch != epoch) progress = true;
                    }
                }
                for (unsigned l = 0; l < count && !w.aborted; l++)
                    if (lanes[l]->state == State::AtWarp && resolve_warp_op(lanes.data(), count, *lanes[l], problem))
                    {
                        again = true;
                        progress = true;
                    }
            }
        }
        if (w.aborted) break;

        unsigned live = 0, at_barrier = 0;
        for (unsigned i = 0; i < n; i++)
        {
            State s = w.fibers[i]->state;
            if (s != State::Done) live++;
            if (s == State::AtBarrier) at_barrier++;
        }
        if (live == 0) break;
        if (at_barrier == live)
        {
            for (unsigned i = 0; i < n; i++)
                if (w.fibers[i]->state == State::AtBarrier) w.fibers[i]->state = State::Runnable;
            continue;
        }
        if (!progress)
        {
            if (problem.empty())
            {
                for (unsigned i = 0; i < n; i++)
                    if (w.fibers[i]->state == State::AtWarp)
                    {
                        problem = thread_name(w.fibers[i]->tc) + " waits at a warp collective while other threads wait at __syncthreads";
                        break;
                    }
                for (unsigned i = 0; i < n && problem.empty(); i++)
                    if (w.fibers[i]->state == State::Spinning)
                        problem = thread_name(w.fibers[i]->tc) + " is " + state_name(State::Spinning);
            }
            w.error = "deadlock: " + problem;
            w.aborted = true;
            break;
        }
    }
    if (!w.aborted)
    {
        std::string left = sm90_block_end();
        if (!left.empty())
        {
            w.error = left;
            w.aborted = true;
        }
    }
    t_block = nullptr;
    w.tramp = nullptr;
    w.args = nullptr;
}

// ---- the pool ----------------------------------------------------------------------------------

struct Job
{
    Trampoline tramp;
    void** args;
    dim3 grid, block;
    size_t dynamic_bytes;
    unsigned long long blocks;
    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    std::mutex error_lock;
    std::string error;
};

void run_job_blocks(Job& job)
{
    Worker& w = worker();
    BlockCtx ctx{};
    ctx.block_dim = job.block;
    ctx.grid_dim = job.grid;
    unsigned char* dyn = nullptr;
    if (job.dynamic_bytes)
    {
        // exact size, from the heap: AddressSanitizer guards both ends
        dyn = static_cast<unsigned char*>(std::malloc(job.dynamic_bytes));
        if (!dyn) { job.failed = true; return; }
    }
    ctx.dynamic_smem = dyn;
    ctx.dynamic_smem_bytes = job.dynamic_bytes;
    for (;;)
    {
        if (job.failed.load(std::memory_order_relaxed)) break;
        unsigned long long b = job.next.fetch_add(1);
        if (b >= job.blocks) break;
        ctx.block_idx = {(unsigned)(b % job.grid.x), (unsigned)((b / job.grid.x) % job.grid.y),
                         (unsigned)(b / ((unsigned long long)job.grid.x * job.grid.y))};
        run_block(w, job.tramp, job.args, ctx);
        if (w.aborted)
        {
            std::lock_guard<std::mutex> g(job.error_lock);
            if (!job.failed.exchange(true))
            {
                char buf[96];
                std::snprintf(buf, sizeof buf, "block (%u,%u,%u): ", ctx.block_idx.x, ctx.block_idx.y, ctx.block_idx.z);
                job.error = buf + w.error;
            }
            break;
        }
    }
    std::free(dyn);
}

class Pool
{
public:
    explicit Pool(unsigned threads) { resize(threads); }
    ~Pool() { stop(); }

    unsigned size() const { return (unsigned)threads_.size() + 1; }

    void resize(unsigned total)
    {
        stop();
        std::lock_guard<std::mutex> g(lock_);
        quit_ = false;
        for (unsigned i = 1; i < std::max(1u, total); i++) threads_.emplace_back([this] { loop(); });
    }

    void run(Job& job)
    {
        std::unique_lock<std::mutex> g(lock_);
        const unsigned helpers = (unsigned)std::min<unsigned long long>(threads_.size(), job.blocks > 0 ? job.blocks - 1 : 0);
        job_ = &job;
        pending_ = helpers;
        active_ = 0;
        generation_++;
        wake_.notify_all();
        g.unlock();
        run_job_blocks(job);
        g.lock();
        done_.wait(g, [&] { return pending_ == 0 && active_ == 0; });
        job_ = nullptr;
    }

private:
    void loop()
    {
        unsigned long long seen = 0;
        std::unique_lock<std::mutex> g(lock_);
        for (;;)
        {
            wake_.wait(g, [&] { return quit_ || (generation_ != seen && pending_ > 0); });
            if (quit_) return;
            seen = generation_;
            pending_--;
            active_++;
            Job* job = job_;
            g.unlock();
            run_job_blocks(*job);
            g.lock();
            active_--;
            if (pending_ == 0 && active_ == 0) done_.notify_all();
        }
    }

    void stop()
    {
        {
            std::lock_guard<std::mutex> g(lock_);
            quit_ = true;
            wake_.notify_all();
        }
        for (auto& t : threads_) t.join();
        threads_.clear();
    }

    std::vector<std::thread> threads_;
    std::mutex lock_;
    std::condition_variable wake_, done_;
    Job* job_ = nullptr;
    unsigned pending_ = 0, active_ = 0;
    unsigned long long generation_ = 0;
    bool quit_ = false;
};

unsigned default_threads()
{
    const char* s = std::getenv("LORI_EMU_THREADS");
    long n = s ? std::atol(s) : 0;
    if (n <= 0) n = (long)std::thread::hardware_concurrency();
    return (unsigned)std::clamp(n, 1L, 64L);
}

Pool& pool()
{
    static Pool p(default_threads());
    return p;
}

std::mutex g_launch_lock;  // one launch at a time: launches on one stream are ordered anyway

// ---- warp collectives --------------------------------------------------------------------------

struct ShufflePayload { uint64_t value; int operand; int width; ShuffleMode mode; uint64_t result; };

void resolve_shuffle(void* const* p, unsigned participants)
{
    for (unsigned l = 0; l < 32; l++)
    {
        if (!(participants & (1u << l))) continue;
        auto& me = *static_cast<ShufflePayload*>(p[l]);
        const int width = me.width, seg = (int)l & ~(width - 1), pos = (int)l & (width - 1);
        int src = (int)l;
        switch (me.mode)
        {
            case ShuffleMode::Index: src = seg + (me.operand & (width - 1)); break;
            case ShuffleMode::Up: src = pos - me.operand >= 0 ? (int)l - me.operand : (int)l; break;
            case ShuffleMode::Down: src = pos + me.operand < width ? (int)l + me.operand : (int)l; break;
            case ShuffleMode::Xor: src = (int)l ^ me.operand; if (src >= seg + width) src = (int)l; break;
        }
        me.result = (src >= 0 && src < 32 && (participants & (1u << src))) ? static_cast<ShufflePayload*>(p[src])->value : me.value;
    }
}

struct VotePayload { int predicate; VoteMode mode; unsigned result; };

void resolve_vote(void* const* p, unsigned participants)
{
    unsigned ballot = 0;
    for (unsigned l = 0; l < 32; l++)
        if ((participants & (1u << l)) && static_cast<VotePayload*>(p[l])->predicate) ballot |= 1u << l;
    for (unsigned l = 0; l < 32; l++)
    {
        if (!(participants & (1u << l))) continue;
        auto& me = *static_cast<VotePayload*>(p[l]);
        switch (me.mode)
        {
            case VoteMode::Any: me.result = ballot != 0; break;
            case VoteMode::All: me.result = ballot == participants; break;
            case VoteMode::Ballot: me.result = ballot; break;
        }
    }
}

float bf16_lo(uint32_t r) { return __uint_as_float(r << 16); }
float bf16_hi(uint32_t r) { return __uint_as_float(r & 0xffff0000u); }

struct MmaPayload { float* d; const uint32_t* a; const uint32_t* b; const float* c; };

// m16n8k16 .row.col bf16 -> f32, fragment layouts from the PTX ISA ("Matrix Fragments for
// mma.m16n8k16 with floating point type"), with g = lane >> 2 and t = lane & 3:
//   A: a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)   (row, k)
//   B: b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8.., n g)
//   C/D: c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..)
// The low half of a 32-bit register holds the lower-indexed element. Products of two bf16 are exact
// in f32; the sum runs over k in order.
void resolve_mma(void* const* p, unsigned participants)
{
    if (participants != 0xffffffffu) return report("mma.sync needs all 32 lanes of the warp");
    float A[16][16], B[16][8], C[16][8];
    for (unsigned l = 0; l < 32; l++)
    {
        auto& m = *static_cast<MmaPayload*>(p[l]);
        const unsigned g = l >> 2, t = l & 3;
        const unsigned r[4] = {g, g + 8, g, g + 8}, k0[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
        for (int i = 0; i < 4; i++)
        {
            A[r[i]][k0[i]] = bf16_lo(m.a[i]);
            A[r[i]][k0[i] + 1] = bf16_hi(m.a[i]);
        }
        B[2 * t][g] = bf16_lo(m.b[0]);
        B[2 * t + 1][g] = bf16_hi(m.b[0]);
        B[2 * t + 8][g] = bf16_lo(m.b[1]);
        B[2 * t + 9][g] = bf16_hi(m.b[1]);
        C[g][2 * t] = m.c[0];
        C[g][2 * t + 1] = m.c[1];
        C[g + 8][2 * t] = m.c[2];
        C[g + 8][2 * t + 1] = m.c[3];
    }
    float D[16][8];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++)
        {
            float s = C[i][j];
            for (int k = 0; k < 16; k++) s += A[i][k] * B[k][j];
            D[i][j] = s;
        }
    for (unsigned l = 0; l < 32; l++)
    {
        auto& m = *static_cast<MmaPayload*>(p[l]);
        const unsigned g = l >> 2, t = l & 3;
        m.d[0] = D[g][2 * t];
        m.d[1] = D[g][2 * t + 1];
        m.d[2] = D[g + 8][2 * t];
        m.d[3] = D[g + 8][2 * t + 1];
    }
}

struct LdmatrixPayload { uint32_t* regs; int count; bool trans; const void* row; };

// ldmatrix .m8n8 .b16: matrix j's row r comes from the address given by lane 8j + r. Without .trans
// lane l receives, of each matrix, row l/4, columns 2(l%4) and 2(l%4)+1; with .trans the transposed
// matrix, i.e. column l/4, rows 2(l%4) and 2(l%4)+1.
void resolve_ldmatrix(void* const* p, unsigned participants)
{
    if (participants != 0xffffffffu) return report("ldmatrix needs all 32 lanes of the warp");
    auto& first = *static_cast<LdmatrixPayload*>(p[0]);
    const int count = first.count;
    uint16_t M[4][8][8];
    for (int j = 0; j < count; j++)
        for (int r = 0; r < 8; r++)
        {
            const auto* row = static_cast<const uint16_t*>(static_cast<LdmatrixPayload*>(p[8 * j + r])->row);
            if (reinterpret_cast<uintptr_t>(row) % 16 != 0) return report("ldmatrix row address is not 16-byte aligned");
            std::memcpy(M[j][r], row, 16);
        }
    for (unsigned l = 0; l < 32; l++)
    {
        auto& me = *static_cast<LdmatrixPayload*>(p[l]);
        const unsigned a = l / 4, b = 2 * (l % 4);
        for (int j = 0; j < count; j++)
        {
            uint16_t lo = first.trans ? M[j][b][a] : M[j][a][b];
            uint16_t hi = first.trans ? M[j][b + 1][a] : M[j][a][b + 1];
            me.regs[j] = (uint32_t)lo | ((uint32_t)hi << 16);
        }
    }
}

} // namespace

// ---- kernel-facing API -------------------------------------------------------------------------

void syncthreads()
{
    Worker& w = *t_worker;
    w.current->state = State::AtBarrier;
    yield_to_scheduler();
}

void spin_wait()
{
    Worker& w = *t_worker;
    w.current->state = State::Spinning;
    yield_to_scheduler();
}

void trap(const char* what)
{
    Worker* w = t_worker;
    if (!w || !w->current)
    {
        std::fprintf(stderr, "lori-emu: %s outside a kernel\n", what);
        std::abort();
    }
    report(what);
    exit_fiber();
}

void warp_collective(unsigned mask, void* payload, WarpResolve resolve)
{
    Worker& w = *t_worker;
    Fiber& f = *w.current;
    if (!(mask & (1u << f.tc.lane))) trap("a warp collective's mask does not include the calling lane");
    f.warp_mask = mask;
    f.warp_payload = payload;
    f.warp_resolve = resolve;
    f.state = State::AtWarp;
    yield_to_scheduler();
    f.warp_resolve = nullptr;
}

uint64_t shuffle(unsigned mask, uint64_t value, int operand, int width, ShuffleMode mode)
{
    if (width <= 0 || width > 32 || (width & (width - 1))) trap("shuffle width must be a power of two <= 32");
    ShufflePayload p{value, operand, width, mode, 0};
    warp_collective(mask, &p, resolve_shuffle);
    return p.result;
}

unsigned vote(unsigned mask, int predicate, VoteMode mode)
{
    VotePayload p{predicate, mode, 0};
    warp_collective(mask, &p, resolve_vote);
    return p.result;
}

void mma_m16n8k16_bf16_f32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4])
{
    float out[4];
    MmaPayload p{out, a, b, c};
    warp_collective(0xffffffffu, &p, resolve_mma);
    for (int i = 0; i < 4; i++) d[i] = out[i];
}

void ldmatrix_m8n8_b16(uint32_t* regs, int count, bool trans, const void* row_address)
{
    LdmatrixPayload p{regs, count, trans, row_address};
    warp_collective(0xffffffffu, &p, resolve_ldmatrix);
}

// ---- launch (used by api.cpp) ------------------------------------------------------------------

bool launch_grid(Trampoline tramp, void** args, dim3 grid, dim3 block, size_t dynamic_bytes, std::string& error)
{
    std::lock_guard<std::mutex> g(g_launch_lock);
    Job job;
    job.tramp = tramp;
    job.args = args;
    job.grid = grid;
    job.block = block;
    job.dynamic_bytes = dynamic_bytes;
    job.blocks = (unsigned long long)grid.x * grid.y * grid.z;
    if (pool().size() == 1 || job.blocks == 1) run_job_blocks(job);
    else pool().run(job);
    if (job.failed)
    {
        error = job.error.empty() ? "out of host memory for dynamic shared memory" : job.error;
        return false;
    }
    return true;
}

void set_thread_count(unsigned n)
{
    std::lock_guard<std::mutex> g(g_launch_lock);  // never under a running launch
    pool().resize(std::clamp(n, 1u, 64u));
}
unsigned thread_count() { return pool().size(); }

} // namespace lori_emu

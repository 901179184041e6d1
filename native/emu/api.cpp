// The emulator's C API: the CUDA driver calls we use, one for one, returning CUresult codes.
// C# binds these in LoRI.Cuda (EmulatorDriver) behind the same interface as libcuda.
//
// Device memory is host memory: a device pointer is the address of a malloc'd block, tracked so that
// every copy and memset is checked against the allocation it falls in (a copy past the end of a
// buffer fails with CUDA_ERROR_INVALID_VALUE instead of corrupting memory). Every call runs to
// completion before it returns, which is one legal schedule of a stream; events record host time.
// The message of the last failure on the calling thread is lemu_last_error().
#include "emu_internal.h"

#include <chrono>
#include <cstdarg>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

enum : int
{
    OK = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    INVALID_HANDLE = 400,
    NOT_FOUND = 500,
    LAUNCH_OUT_OF_RESOURCES = 701,
    LAUNCH_FAILED = 719,
};

thread_local std::string t_error;

int fail(int code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
int fail(int code, const char* fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    t_error = buf;
    return code;
}

struct Kernel
{
    std::string module;
    std::string name;
    lori_emu::Trampoline tramp;
    unsigned params;
    int max_dynamic_smem = 48 * 1024;
};

struct Module { std::string name; };
struct Stream { int unused; };
struct Event { std::chrono::steady_clock::time_point at; bool recorded = false; };

constexpr int kMaxDynamicSmemOptin = 227 * 1024;

std::vector<std::unique_ptr<Kernel>>& kernels()
{
    static std::vector<std::unique_ptr<Kernel>> k;
    return k;
}

std::mutex g_alloc_lock;
std::map<uintptr_t, size_t>& allocations()
{
    static std::map<uintptr_t, size_t> m;
    return m;
}

// True when [p, p + n) lies inside one live allocation.
bool inside_allocation(uintptr_t p, size_t n)
{
    std::lock_guard<std::mutex> g(g_alloc_lock);
    auto& m = allocations();
    auto it = m.upper_bound(p);
    if (it == m.begin()) return false;
    --it;
    return p >= it->first && p + n <= it->first + it->second && p + n >= p;
}

std::string module_of(const char* file)
{
    std::string f(file);
    size_t slash = f.find_last_of("/\\");
    if (slash != std::string::npos) f = f.substr(slash + 1);
    size_t dot = f.find('.');
    if (dot != std::string::npos) f = f.substr(0, dot);
    return f;
}

} // namespace

namespace lori_emu {
void register_kernel(const char* file, const char* name, Trampoline tramp, unsigned param_count)
{
    auto k = std::make_unique<Kernel>();
    k->module = module_of(file);
    k->name = name;
    k->tramp = tramp;
    k->params = param_count;
    kernels().push_back(std::move(k));
}
} // namespace lori_emu

extern "C" {

__attribute__((visibility("default"))) const char* lemu_last_error() { return t_error.c_str(); }

__attribute__((visibility("default"))) int lemu_init() { return OK; }

__attribute__((visibility("default"))) int lemu_set_threads(int n)
{
    if (n < 1) return fail(INVALID_VALUE, "lemu_set_threads: %d threads", n);
    lori_emu::set_thread_count((unsigned)n);
    return OK;
}

__attribute__((visibility("default"))) int lemu_thread_count() { return (int)lori_emu::thread_count(); }

__attribute__((visibility("default"))) int lemu_is_asan()
{
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#else
    return 0;
#endif
}

__attribute__((visibility("default"))) int lemu_mem_alloc(uint64_t* dptr, size_t bytes)
{
    if (!dptr) return fail(INVALID_VALUE, "lemu_mem_alloc: null result pointer");
    if (bytes == 0) return fail(INVALID_VALUE, "lemu_mem_alloc: zero bytes");
    void* p = nullptr;
    // exact size (no rounding up), so AddressSanitizer sees the true end of the buffer
    if (posix_memalign(&p, 256, bytes) != 0 || !p) return fail(OUT_OF_MEMORY, "lemu_mem_alloc: %zu bytes", bytes);
    {
        std::lock_guard<std::mutex> g(g_alloc_lock);
        allocations()[(uintptr_t)p] = bytes;
    }
    *dptr = (uint64_t)(uintptr_t)p;
    return OK;
}

__attribute__((visibility("default"))) int lemu_mem_free(uint64_t dptr)
{
    if (dptr == 0) return OK;
    std::lock_guard<std::mutex> g(g_alloc_lock);
    auto it = allocations().find((uintptr_t)dptr);
    if (it == allocations().end()) return fail(INVALID_VALUE, "lemu_mem_free: 0x%llx is not the start of an allocation", (unsigned long long)dptr);
    allocations().erase(it);
    std::free((void*)(uintptr_t)dptr);
    return OK;
}

__attribute__((visibility("default"))) int lemu_mem_alloc_host(void** p, size_t bytes)
{
    if (!p || bytes == 0) return fail(INVALID_VALUE, "lemu_mem_alloc_host: bad arguments");
    if (posix_memalign(p, 256, bytes) != 0) return fail(OUT_OF_MEMORY, "lemu_mem_alloc_host: %zu bytes", bytes);
    return OK;
}

__attribute__((visibility("default"))) int lemu_mem_free_host(void* p)
{
    std::free(p);
    return OK;
}

__attribute__((visibility("default"))) int lemu_memset_d8(uint64_t dst, unsigned char value, size_t n, void*)
{
    if (n == 0) return OK;
    if (!inside_allocation(dst, n)) return fail(INVALID_VALUE, "lemu_memset_d8: 0x%llx + %zu bytes is not inside one allocation", (unsigned long long)dst, n);
    std::memset((void*)(uintptr_t)dst, value, n);
    return OK;
}

__attribute__((visibility("default"))) int lemu_memcpy_htod(uint64_t dst, const void* src, size_t n, void*)
{
    if (n == 0) return OK;
    if (!src) return fail(INVALID_VALUE, "lemu_memcpy_htod: null source");
    if (!inside_allocation(dst, n)) return fail(INVALID_VALUE, "lemu_memcpy_htod: destination 0x%llx + %zu bytes is not inside one allocation", (unsigned long long)dst, n);
    std::memcpy((void*)(uintptr_t)dst, src, n);
    return OK;
}

__attribute__((visibility("default"))) int lemu_memcpy_dtoh(void* dst, uint64_t src, size_t n, void*)
{
    if (n == 0) return OK;
    if (!dst) return fail(INVALID_VALUE, "lemu_memcpy_dtoh: null destination");
    if (!inside_allocation(src, n)) return fail(INVALID_VALUE, "lemu_memcpy_dtoh: source 0x%llx + %zu bytes is not inside one allocation", (unsigned long long)src, n);
    std::memcpy(dst, (const void*)(uintptr_t)src, n);
    return OK;
}

__attribute__((visibility("default"))) int lemu_memcpy_dtod(uint64_t dst, uint64_t src, size_t n, void*)
{
    if (n == 0) return OK;
    if (!inside_allocation(src, n)) return fail(INVALID_VALUE, "lemu_memcpy_dtod: source 0x%llx + %zu bytes is not inside one allocation", (unsigned long long)src, n);
    if (!inside_allocation(dst, n)) return fail(INVALID_VALUE, "lemu_memcpy_dtod: destination 0x%llx + %zu bytes is not inside one allocation", (unsigned long long)dst, n);
    std::memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n);
    return OK;
}

__attribute__((visibility("default"))) int lemu_module_load(void** module, const char* name)
{
    if (!module || !name) return fail(INVALID_VALUE, "lemu_module_load: null argument");
    for (auto& k : kernels())
        if (k->module == name)
        {
            *module = new Module{name};
            return OK;
        }
    return fail(NOT_FOUND, "lemu_module_load: no kernel source '%s.cu' is compiled into the emulator", name);
}

__attribute__((visibility("default"))) int lemu_module_unload(void* module)
{
    if (!module) return fail(INVALID_HANDLE, "lemu_module_unload: null module");
    delete static_cast<Module*>(module);
    return OK;
}

__attribute__((visibility("default"))) int lemu_module_get_function(void** fn, void* module, const char* name)
{
    if (!fn || !module || !name) return fail(INVALID_VALUE, "lemu_module_get_function: null argument");
    auto* m = static_cast<Module*>(module);
    for (auto& k : kernels())
        if (k->module == m->name && k->name == name)
        {
            *fn = k.get();
            return OK;
        }
    return fail(NOT_FOUND, "lemu_module_get_function: module '%s' has no kernel '%s'", m->name.c_str(), name);
}

__attribute__((visibility("default"))) int lemu_func_param_count(void* fn)
{
    return fn ? (int)static_cast<Kernel*>(fn)->params : -1;
}

__attribute__((visibility("default"))) int lemu_func_set_max_dynamic_smem(void* fn, int bytes)
{
    if (!fn) return fail(INVALID_HANDLE, "lemu_func_set_max_dynamic_smem: null function");
    if (bytes < 0 || bytes > kMaxDynamicSmemOptin)
        return fail(INVALID_VALUE, "lemu_func_set_max_dynamic_smem: %d bytes (the limit is %d)", bytes, kMaxDynamicSmemOptin);
    static_cast<Kernel*>(fn)->max_dynamic_smem = bytes;
    return OK;
}

__attribute__((visibility("default"))) int lemu_launch(void* fn, unsigned gx, unsigned gy, unsigned gz,
                                                       unsigned bx, unsigned by, unsigned bz,
                                                       unsigned dynamic_smem, void*, void** args)
{
    if (!fn) return fail(INVALID_HANDLE, "lemu_launch: null function");
    auto* k = static_cast<Kernel*>(fn);
    if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || gx > 0x7fffffffu)
        return fail(INVALID_VALUE, "launch of %s: grid (%u,%u,%u) is invalid", k->name.c_str(), gx, gy, gz);
    if (bx == 0 || by == 0 || bz == 0 || bz > 64 || (unsigned long long)bx * by * bz > 1024)
        return fail(INVALID_VALUE, "launch of %s: block (%u,%u,%u) is invalid (at most 1024 threads)", k->name.c_str(), bx, by, bz);
    if ((int)dynamic_smem > k->max_dynamic_smem)
        return fail(INVALID_VALUE, "launch of %s: %u bytes of dynamic shared memory exceed the function's limit of %d (set it with cuFuncSetAttribute)",
                    k->name.c_str(), dynamic_smem, k->max_dynamic_smem);
    if (k->params > 0 && !args) return fail(INVALID_VALUE, "launch of %s: null argument array for %u parameters", k->name.c_str(), k->params);
    std::string error;
    if (!lori_emu::launch_grid(k->tramp, args, dim3(gx, gy, gz), dim3(bx, by, bz), dynamic_smem, error))
        return fail(LAUNCH_FAILED, "kernel %s failed: %s", k->name.c_str(), error.c_str());
    return OK;
}

// cuTensorMapEncodeTiled with the driver's documented checks; the 128 bytes hold an EmuTensorMap.
__attribute__((visibility("default"))) int lemu_tensor_map_encode_tiled(void* map, int dtype, unsigned rank, uint64_t address,
                                                                        const uint64_t* dims, const uint64_t* strides,
                                                                        const unsigned* box, const unsigned* element_strides,
                                                                        int interleave, int swizzle, int l2_promotion, int oob_fill)
{
    static const unsigned sizes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
    if (!map || !dims || !box || !element_strides || (rank > 1 && !strides)) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: null argument");
    if ((uintptr_t)map % 64 != 0) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: the tensor map is not 64-byte aligned");
    if (dtype < 0 || dtype > 12) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: data type %d", dtype);
    if (rank < 1 || rank > 5) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: rank %u (1 to 5)", rank);
    if (interleave != 0) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: interleaved layouts are not emulated");
    if (swizzle < 0 || swizzle > 3 || l2_promotion < 0 || l2_promotion > 3 || oob_fill < 0 || oob_fill > 1)
        return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: swizzle %d, L2 promotion %d or OOB fill %d out of range", swizzle, l2_promotion, oob_fill);
    if (address % 16 != 0) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: global address 0x%llx is not 16-byte aligned", (unsigned long long)address);
    const unsigned es = sizes[dtype];
    lori_emu::EmuTensorMap tm{};
    tm.magic = lori_emu::EmuTensorMap::kMagic;
    tm.dtype = (uint8_t)dtype;
    tm.rank = (uint8_t)rank;
    tm.elem_bytes = (uint8_t)es;
    tm.swizzle = (uint8_t)swizzle;
    tm.l2_promotion = (uint8_t)l2_promotion;
    tm.oob_fill = (uint8_t)oob_fill;
    tm.address = address;
    for (unsigned i = 0; i < rank; i++)
    {
        if (dims[i] == 0 || dims[i] > (1ull << 32)) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: globalDim[%u] = %llu (1 to 2^32)", i, (unsigned long long)dims[i]);
        if (box[i] == 0 || box[i] > 256) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: boxDim[%u] = %u (1 to 256)", i, box[i]);
        if (element_strides[i] == 0 || element_strides[i] > 8) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: elementStrides[%u] = %u (1 to 8)", i, element_strides[i]);
        tm.dims[i] = dims[i];
        tm.box_minus_1[i] = (uint8_t)(box[i] - 1);
        tm.element_strides_minus_1[i] = (uint8_t)(element_strides[i] - 1);
    }
    for (unsigned i = 0; i + 1 < rank; i++)
    {
        if (strides[i] % 16 != 0 || strides[i] >= (1ull << 40))
            return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: globalStrides[%u] = %llu (a multiple of 16 below 2^40)", i, (unsigned long long)strides[i]);
        tm.strides[i] = strides[i];
    }
    if (rank > 1 && strides[0] < dims[0] * es)
        return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: globalStrides[0] = %llu is less than a row (%llu bytes)",
                    (unsigned long long)strides[0], (unsigned long long)(dims[0] * es));
    const unsigned inner = box[0] * es;
    if (inner % 16 != 0) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: boxDim[0] x element size = %u bytes, not a multiple of 16", inner);
    const unsigned span = swizzle == 1 ? 32 : swizzle == 2 ? 64 : swizzle == 3 ? 128 : 0;
    if (span && inner > span) return fail(INVALID_VALUE, "cuTensorMapEncodeTiled: an inner box of %u bytes exceeds the %u-byte swizzle span", inner, span);
    std::memset(map, 0, 128);
    std::memcpy(map, &tm, sizeof tm);
    return OK;
}

__attribute__((visibility("default"))) int lemu_stream_create(void** s)
{
    if (!s) return fail(INVALID_VALUE, "lemu_stream_create: null result");
    *s = new Stream{0};
    return OK;
}

__attribute__((visibility("default"))) int lemu_stream_destroy(void* s)
{
    delete static_cast<Stream*>(s);
    return OK;
}

__attribute__((visibility("default"))) int lemu_stream_synchronize(void*) { return OK; }
__attribute__((visibility("default"))) int lemu_ctx_synchronize() { return OK; }

__attribute__((visibility("default"))) int lemu_event_create(void** e)
{
    if (!e) return fail(INVALID_VALUE, "lemu_event_create: null result");
    *e = new Event();
    return OK;
}

__attribute__((visibility("default"))) int lemu_event_destroy(void* e)
{
    delete static_cast<Event*>(e);
    return OK;
}

__attribute__((visibility("default"))) int lemu_event_record(void* e, void*)
{
    if (!e) return fail(INVALID_HANDLE, "lemu_event_record: null event");
    auto* ev = static_cast<Event*>(e);
    ev->at = std::chrono::steady_clock::now();
    ev->recorded = true;
    return OK;
}

__attribute__((visibility("default"))) int lemu_event_synchronize(void* e)
{
    if (!e) return fail(INVALID_HANDLE, "lemu_event_synchronize: null event");
    return OK;
}

__attribute__((visibility("default"))) int lemu_event_elapsed_time(float* ms, void* start, void* end)
{
    if (!ms || !start || !end) return fail(INVALID_VALUE, "lemu_event_elapsed_time: null argument");
    auto* a = static_cast<Event*>(start);
    auto* b = static_cast<Event*>(end);
    if (!a->recorded || !b->recorded) return fail(INVALID_HANDLE, "lemu_event_elapsed_time: an event was never recorded");
    *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
    return OK;
}

} // extern "C"

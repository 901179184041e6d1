// A tiny host program over the emulator's C API, linked against the AddressSanitizer build: the
// test suite runs it in a child process to show that a kernel's out-of-bounds write is caught
// (`lori_emu_probe oob` must die with a heap-buffer-overflow report) while a correct kernel passes
// (`lori_emu_probe ok`).
#include <cstdint>
#include <cstdio>
#include <cstring>

extern "C" {
int lemu_mem_alloc(uint64_t*, size_t);
int lemu_mem_free(uint64_t);
int lemu_module_load(void**, const char*);
int lemu_module_get_function(void**, void*, const char*);
int lemu_launch(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**);
int lemu_module_unload(void*);
int lemu_is_asan();
const char* lemu_last_error();
}

int main(int argc, char** argv)
{
    if (argc != 2 || (std::strcmp(argv[1], "oob") != 0 && std::strcmp(argv[1], "ok") != 0))
    {
        std::fprintf(stderr, "usage: lori_emu_probe oob|ok\n");
        return 2;
    }
    const bool oob = std::strcmp(argv[1], "oob") == 0;
    void* module = nullptr;
    void* fn = nullptr;
    uint64_t buf = 0;
    int n = 64;
    // the "ok" run writes inside the buffer: the same kernel with n one smaller than the allocation
    if (lemu_mem_alloc(&buf, n * sizeof(float)) || lemu_module_load(&module, "emu_checks") ||
        lemu_module_get_function(&fn, module, "emu_oob_write"))
    {
        std::fprintf(stderr, "setup failed: %s\n", lemu_last_error());
        return 3;
    }
    int limit = oob ? n : n - 1;
    void* args[] = {&buf, &limit};
    if (lemu_launch(fn, 4, 1, 1, 64, 1, 1, 0, nullptr, args))
    {
        std::fprintf(stderr, "launch failed: %s\n", lemu_last_error());
        return 4;
    }
    lemu_mem_free(buf);
    lemu_module_unload(module);
    std::printf("completed (asan=%d)\n", lemu_is_asan());
    return 0;
}

using System.Reflection;
using System.Runtime.InteropServices;
using LoRI.Cuda.Driver;

namespace LoRI.Cuda.Emulator;

/// <summary>
/// The host emulator's C API (native/emu/api.cpp), one entry per driver call we use. The library is
/// found by <see cref="EmulatorLibrary"/>.
/// </summary>
internal static unsafe partial class EmuApi
{
    public const string Library = "loriemu";

    [LibraryImport(Library)] public static partial nint lemu_last_error();
    [LibraryImport(Library)] public static partial CuResult lemu_init();
    [LibraryImport(Library)] public static partial CuResult lemu_set_threads(int n);
    [LibraryImport(Library)] public static partial int lemu_thread_count();
    [LibraryImport(Library)] public static partial int lemu_is_asan();
    [LibraryImport(Library)] public static partial CuResult lemu_mem_alloc(out ulong dptr, nuint bytes);
    [LibraryImport(Library)] public static partial CuResult lemu_mem_free(ulong dptr);
    [LibraryImport(Library)] public static partial CuResult lemu_mem_alloc_host(out nint p, nuint bytes);
    [LibraryImport(Library)] public static partial CuResult lemu_mem_free_host(nint p);
    [LibraryImport(Library)] public static partial CuResult lemu_memset_d8(ulong dst, byte value, nuint n, nint stream);
    [LibraryImport(Library)] public static partial CuResult lemu_memcpy_htod(ulong dst, nint src, nuint n, nint stream);
    [LibraryImport(Library)] public static partial CuResult lemu_memcpy_dtoh(nint dst, ulong src, nuint n, nint stream);
    [LibraryImport(Library)] public static partial CuResult lemu_memcpy_dtod(ulong dst, ulong src, nuint n, nint stream);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)] public static partial CuResult lemu_module_load(out nint module, string name);
    [LibraryImport(Library)] public static partial CuResult lemu_module_unload(nint module);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)] public static partial CuResult lemu_module_get_function(out nint fn, nint module, string name);
    [LibraryImport(Library)] public static partial int lemu_func_param_count(nint fn);
    [LibraryImport(Library)] public static partial CuResult lemu_func_set_max_dynamic_smem(nint fn, int bytes);
    [LibraryImport(Library)]
    public static partial CuResult lemu_launch(nint fn, uint gx, uint gy, uint gz, uint bx, uint by, uint bz,
                                               uint dynamicSmem, nint stream, void** args);
    [LibraryImport(Library)]
    public static partial CuResult lemu_tensor_map_encode_tiled(TensorMap* map, TensorMapDataType dataType, uint rank, ulong globalAddress,
                                                                ulong* globalDim, ulong* globalStrides, uint* boxDim, uint* elementStrides,
                                                                int interleave, TensorMapSwizzle swizzle, TensorMapL2Promotion l2Promotion, TensorMapOobFill oobFill);
    [LibraryImport(Library)] public static partial CuResult lemu_stream_create(out nint stream);
    [LibraryImport(Library)] public static partial CuResult lemu_stream_destroy(nint stream);
    [LibraryImport(Library)] public static partial CuResult lemu_stream_synchronize(nint stream);
    [LibraryImport(Library)] public static partial CuResult lemu_ctx_synchronize();
    [LibraryImport(Library)] public static partial CuResult lemu_event_create(out nint e);
    [LibraryImport(Library)] public static partial CuResult lemu_event_destroy(nint e);
    [LibraryImport(Library)] public static partial CuResult lemu_event_record(nint e, nint stream);
    [LibraryImport(Library)] public static partial CuResult lemu_event_synchronize(nint e);
    [LibraryImport(Library)] public static partial CuResult lemu_event_elapsed_time(out float ms, nint start, nint end);

    static EmuApi() => EmulatorLibrary.Register();
}

/// <summary>
/// Finds libloriemu.so: $LORI_EMU_LIBRARY when set (e.g. the AddressSanitizer build), else next to the
/// application, else build/native/ of the source tree above the application (where ./build.sh puts it).
/// </summary>
public static class EmulatorLibrary
{
    private static int _registered;

    /// <summary>The path that will be loaded, or null when none is found.</summary>
    public static string? Locate()
    {
        var env = Environment.GetEnvironmentVariable("LORI_EMU_LIBRARY");
        if (!string.IsNullOrEmpty(env)) return File.Exists(env) ? env : null;
        const string file = "libloriemu.so";
        var here = Path.Combine(AppContext.BaseDirectory, file);
        if (File.Exists(here)) return here;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "build", "native", file);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    internal static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) != 0) return;
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(EmulatorLibrary).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            // a resolver is already set for this assembly (by the host); it must then find the library itself
        }
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (name != EmuApi.Library) return 0;
        var file = Locate() ?? throw new DllNotFoundException(
            "libloriemu.so (the CUDA emulator) was not found: build it with ./build.sh (cmake -S native -B build/native), " +
            "or set LORI_EMU_LIBRARY to its path");
        return NativeLibrary.Load(file);
    }
}

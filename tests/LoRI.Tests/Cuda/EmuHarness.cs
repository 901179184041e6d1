using System.Runtime.InteropServices;
using LoRI.Cuda.Driver;
using LoRI.Cuda.Emulator;

namespace LoRI.Tests.Cuda;

/// <summary>
/// Launching kernels by name from tests, on the emulator or a real device: device buffers from arrays, arguments packed as
/// cuLaunchKernel takes them (an array of pointers to each argument's value).
/// </summary>
internal sealed class EmuHarness : IDisposable
{
    private readonly List<ulong> _buffers = new();
    private readonly Dictionary<string, CudaModule> _modules = new();
    public ICudaDriver Driver { get; }

    public EmuHarness(int threads = 0) => Driver = new EmulatorDriver(threads);
    public EmuHarness(ICudaDriver driver) => Driver = driver;

    public unsafe ulong Upload<T>(T[] data) where T : unmanaged
    {
        long bytes = (long)data.Length * sizeof(T);
        var p = Driver.Alloc(Math.Max(bytes, 1));
        _buffers.Add(p);
        fixed (T* src = data) Driver.CopyHtoD(p, (nint)src, bytes, 0);
        return p;
    }

    public unsafe ulong Zeros<T>(int count) where T : unmanaged
    {
        long bytes = (long)count * sizeof(T);
        var p = Driver.Alloc(bytes);
        _buffers.Add(p);
        Driver.Memset(p, 0, bytes, 0);
        return p;
    }

    public unsafe T[] Download<T>(ulong p, int count) where T : unmanaged
    {
        var r = new T[count];
        fixed (T* dst = r) Driver.CopyDtoH((nint)dst, p, (long)count * sizeof(T), 0);
        return r;
    }

    public nint Function(string module, string name)
    {
        if (!_modules.TryGetValue(module, out var m)) _modules[module] = m = Driver.LoadModule(module);
        return Driver.GetFunction(m, name);
    }

    /// <summary>Launches module.name; each argument is a ulong (device pointer), int, uint, float or TensorMap.</summary>
    public unsafe void Launch(string module, string name, Dim3 grid, Dim3 block, int dynamicSmem, params object[] args)
    {
        var fn = Function(module, name);
        if (Driver is EmulatorDriver emu) Assert.That(emu.ParameterCount(fn), Is.EqualTo(args.Length), $"{name}: argument count");
        var values = stackalloc ulong[Math.Max(1, args.Length)];
        var pointers = stackalloc void*[Math.Max(1, args.Length)];
        // tensor maps (by value, 128 bytes) from 64-byte aligned storage, as the driver wants them
        var mapBytes = stackalloc byte[args.Length * 128 + 64];
        var maps = (TensorMap*)(((nint)mapBytes + 63) & ~(nint)63);
        for (int i = 0; i < args.Length; i++)
        {
            values[i] = 0;
            if (args[i] is TensorMap map)
            {
                maps[i] = map;
                pointers[i] = &maps[i];
                continue;
            }
            switch (args[i])
            {
                case ulong u: values[i] = u; break;
                case int v: *(int*)&values[i] = v; break;
                case uint v: *(uint*)&values[i] = v; break;
                case float v: *(float*)&values[i] = v; break;
                default: throw new ArgumentException($"unsupported argument type {args[i].GetType()}");
            }
            pointers[i] = &values[i];
        }
        Driver.Launch(fn, grid, block, dynamicSmem, 0, pointers);
    }

    public void Dispose()
    {
        foreach (var m in _modules.Values) m.Dispose();
        foreach (var b in _buffers) Driver.Free(b);
        Driver.Dispose();
    }
}

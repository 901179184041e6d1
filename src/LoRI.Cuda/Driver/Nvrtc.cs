using System.Runtime.InteropServices;
using System.Text;

namespace LoRI.Cuda.Driver;

/// <summary>
/// NVRTC, the CUDA runtime compiler: kernel source to PTX with no GPU present. The library is tried
/// as libnvrtc.so.11.2, .12, .13 (then plain libnvrtc.so), in that order; entry points are bound as
/// function pointers because the library's name is only known at run time.
/// </summary>
public sealed unsafe class Nvrtc
{
    private static readonly string[] Candidates = ["libnvrtc.so.11.2", "libnvrtc.so.12", "libnvrtc.so.13", "libnvrtc.so"];
    private static readonly Lazy<(Nvrtc? Lib, string Reason)> Shared = new(Load);

    private readonly delegate* unmanaged<int, byte*> _getErrorString;
    private readonly delegate* unmanaged<int*, int*, int> _version;
    private readonly delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int> _createProgram;
    private readonly delegate* unmanaged<nint, int, byte**, int> _compileProgram;
    private readonly delegate* unmanaged<nint*, int> _destroyProgram;
    private readonly delegate* unmanaged<nint, nuint*, int> _getPtxSize;
    private readonly delegate* unmanaged<nint, byte*, int> _getPtx;
    private readonly delegate* unmanaged<nint, nuint*, int> _getLogSize;
    private readonly delegate* unmanaged<nint, byte*, int> _getLog;

    /// <summary>The file name that was loaded, e.g. libnvrtc.so.11.2.</summary>
    public string LibraryName { get; }
    public (int Major, int Minor) Version { get; }

    private Nvrtc(string name, nint lib)
    {
        LibraryName = name;
        _getErrorString = (delegate* unmanaged<int, byte*>)NativeLibrary.GetExport(lib, "nvrtcGetErrorString");
        _version = (delegate* unmanaged<int*, int*, int>)NativeLibrary.GetExport(lib, "nvrtcVersion");
        _createProgram = (delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int>)NativeLibrary.GetExport(lib, "nvrtcCreateProgram");
        _compileProgram = (delegate* unmanaged<nint, int, byte**, int>)NativeLibrary.GetExport(lib, "nvrtcCompileProgram");
        _destroyProgram = (delegate* unmanaged<nint*, int>)NativeLibrary.GetExport(lib, "nvrtcDestroyProgram");
        _getPtxSize = (delegate* unmanaged<nint, nuint*, int>)NativeLibrary.GetExport(lib, "nvrtcGetPTXSize");
        _getPtx = (delegate* unmanaged<nint, byte*, int>)NativeLibrary.GetExport(lib, "nvrtcGetPTX");
        _getLogSize = (delegate* unmanaged<nint, nuint*, int>)NativeLibrary.GetExport(lib, "nvrtcGetProgramLogSize");
        _getLog = (delegate* unmanaged<nint, byte*, int>)NativeLibrary.GetExport(lib, "nvrtcGetProgramLog");
        int major, minor;
        Check(_version(&major, &minor), "nvrtcVersion");
        Version = (major, minor);
    }

    /// <summary>The first NVRTC found, or null with the reason none was.</summary>
    public static Nvrtc? TryLoad(out string reason)
    {
        var (lib, why) = Shared.Value;
        reason = why;
        return lib;
    }

    private static (Nvrtc?, string) Load()
    {
        foreach (var name in Candidates)
            if (NativeLibrary.TryLoad(name, out var handle))
                return (new Nvrtc(name, handle), "");
        return (null, $"NVRTC is not installed (tried {string.Join(", ", Candidates)}); on Debian: apt-get install libnvrtc11.2 (non-free)");
    }

    private void Check(int status, string call, nint program = 0)
    {
        if (status == 0) return;
        var text = Marshal.PtrToStringUTF8((nint)_getErrorString(status)) ?? status.ToString();
        var log = program != 0 ? Log(program) : "";
        throw new LoRIException($"{call} failed: {text}{(log.Length > 0 ? "\n" + log : "")}");
    }

    private string Log(nint program)
    {
        nuint size;
        if (_getLogSize(program, &size) != 0 || size <= 1) return "";
        var buf = new byte[(int)size];
        fixed (byte* p = buf)
            if (_getLog(program, p) != 0) return "";
        return Encoding.UTF8.GetString(buf, 0, (int)size - 1).Trim();
    }

    /// <summary>
    /// Compiles <paramref name="source"/> (named <paramref name="name"/>, e.g. "rmsnorm.cu") to PTX.
    /// <paramref name="headers"/> maps include names exactly as the source spells them to their text.
    /// Throws with the compiler's log on error; <paramref name="log"/> gets the log on success (warnings).
    /// </summary>
    public string CompileToPtx(string source, string name, IReadOnlyDictionary<string, string> headers,
                               IReadOnlyList<string> options, out string log)
    {
        var allocations = new List<nint>();
        byte* Utf8(string s)
        {
            var p = Marshal.StringToCoTaskMemUTF8(s);
            allocations.Add(p);
            return (byte*)p;
        }
        try
        {
            var headerText = stackalloc byte*[Math.Max(1, headers.Count)];
            var headerNames = stackalloc byte*[Math.Max(1, headers.Count)];
            int h = 0;
            foreach (var (include, text) in headers)
            {
                headerNames[h] = Utf8(include);
                headerText[h] = Utf8(text);
                h++;
            }
            nint program;
            Check(_createProgram(&program, Utf8(source), Utf8(name), headers.Count, headerText, headerNames), $"nvrtcCreateProgram({name})");
            try
            {
                var opts = stackalloc byte*[Math.Max(1, options.Count)];
                for (int i = 0; i < options.Count; i++) opts[i] = Utf8(options[i]);
                Check(_compileProgram(program, options.Count, opts), $"nvrtcCompileProgram({name}, {string.Join(' ', options)})", program);
                log = Log(program);
                nuint size;
                Check(_getPtxSize(program, &size), "nvrtcGetPTXSize");
                var ptx = new byte[(int)size];
                fixed (byte* p = ptx) Check(_getPtx(program, p), "nvrtcGetPTX");
                return Encoding.UTF8.GetString(ptx, 0, Math.Max(0, (int)size - 1));
            }
            finally
            {
                _destroyProgram(&program);
            }
        }
        finally
        {
            foreach (var p in allocations) Marshal.FreeCoTaskMem(p);
        }
    }
}

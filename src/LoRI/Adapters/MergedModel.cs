using System.Runtime.InteropServices;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Adapters;

/// <summary>
/// `merge-into-model`: a standalone HF-layout model folder with adapters folded into the weights,
/// W' = W + sum_i w_i s_i B_i A_i computed in fp32 and stored in W's dtype. Every other tensor is copied
/// byte for byte; config.json is rewritten from the parsed config, the tokenizer and generation files are
/// copied. Tensors are streamed chunk by chunk from the memory-mapped checkpoint, so memory stays small
/// whatever the model size.
/// </summary>
public static class MergedModel
{
    /// <summary>Files copied unchanged from the source folder when present.</summary>
    public static readonly string[] CopiedFiles =
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json", "chat_template.jinja"];

    public static void Write(string modelDir, IReadOnlyList<(LoraAdapter Adapter, float Weight)> adapters, string outDir)
    {
        if (Path.GetFullPath(modelDir).TrimEnd('/') == Path.GetFullPath(outDir).TrimEnd('/'))
            throw new LoRIException($"{outDir}: the output folder must differ from the model folder (its weights are being read)");
        if (File.Exists(Path.Combine(outDir, Checkpoint.IndexFileName)))
            throw new LoRIException($"{outDir}: holds {Checkpoint.IndexFileName}, which would shadow the merged {Checkpoint.SingleFileName}; use an empty folder");
        var config = LlamaConfig.Load(modelDir);
        foreach (var (a, _) in adapters) a.ValidateFor(config);
        using var ckpt = Checkpoint.Open(modelDir);
        config.Validate(ckpt);
        var terms = new Dictionary<string, List<(LoraModule M, float Scale)>>(StringComparer.Ordinal);
        foreach (var (a, w) in adapters)
            foreach (var m in a.Modules)
            {
                if (w == 0) continue;
                var name = m.Proj.HfPrefix(m.Layer) + ".weight";
                if (!terms.TryGetValue(name, out var list)) terms[name] = list = new();
                list.Add((m, m.Scale * w));
            }

        Directory.CreateDirectory(outDir);
        var writer = new SafeTensorsWriter();
        writer.Metadata["format"] = "pt";
        foreach (var name in ckpt.Names)
        {
            var (file, entry) = ckpt.Get(name);
            nint src = file.Pointer(entry);
            if (terms.TryGetValue(name, out var t))
            {
                if (!(entry.DType is DType.F32 or DType.F16 or DType.BF16))
                    throw new UnsupportedException($"{ckpt.Path}: tensor '{name}' is {entry.DType.SafetensorsName()}; merging needs F32, F16 or BF16");
                writer.Add(name, entry.DType, entry.Shape, MergedFill(src, entry.DType, entry.Shape[0], entry.Shape[1], t));
            }
            else
                writer.Add(name, entry.DType, entry.Shape, (dst, offset) => Copy(src + (nint)offset, dst));
        }
        writer.Write(Path.Combine(outDir, Checkpoint.SingleFileName));
        config.Save(outDir);
        foreach (var f in CopiedFiles)
        {
            var s = Path.Combine(modelDir, f);
            if (File.Exists(s)) File.Copy(s, Path.Combine(outDir, f), overwrite: true);
        }
    }

    private static unsafe void Copy(nint src, Span<byte> dst) => new ReadOnlySpan<byte>((void*)src, dst.Length).CopyTo(dst);

    /// <summary>Produces any byte range of the merged tensor: each touched row is merged in fp32, then encoded.</summary>
    private static TensorFill MergedFill(nint w, DType dt, int rows, int cols, List<(LoraModule M, float Scale)> terms)
    {
        int es = dt.Size();
        long rowBytes = (long)cols * es;
        return (dst, offset) =>
        {
            var row = new float[cols];
            var enc = new byte[rowBytes];
            long end = offset + dst.Length;
            for (long r = offset / rowBytes; r < rows && r * rowBytes < end; r++)
            {
                Backend.Cpu.CpuOps.ToFloat(dt, w, r * cols, row);
                AddDelta(row, (int)r, terms);
                Encode(row, dt, enc);
                long r0 = r * rowBytes;
                long from = Math.Max(offset, r0), to = Math.Min(end, r0 + rowBytes);
                enc.AsSpan((int)(from - r0), (int)(to - from)).CopyTo(dst[(int)(from - offset)..]);
            }
        };
    }

    /// <summary>row += sum scale_i B_i[o, :] A_i in fp32 (the merge of one weight row o).</summary>
    public static void AddDelta(Span<float> row, int o, IReadOnlyList<(LoraModule M, float Scale)> terms)
    {
        foreach (var (m, s) in terms)
            for (int j = 0; j < m.Rank; j++)
            {
                float coef = s * m.B[(long)o * m.Rank + j];
                if (coef != 0) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(m.A.AsSpan(j * m.In, m.In), coef, row, row);
            }
    }

    public static void Encode(ReadOnlySpan<float> row, DType dt, Span<byte> dst)
    {
        switch (dt)
        {
            case DType.F32: MemoryMarshal.AsBytes(row).CopyTo(dst); break;
            case DType.BF16: Bf16.FromFloat(row, MemoryMarshal.Cast<byte, ushort>(dst)); break;
            case DType.F16: F16.FromFloat(row, MemoryMarshal.Cast<byte, ushort>(dst)); break;
            default: throw new UnsupportedException($"cannot store merged weights as {dt}");
        }
    }
}

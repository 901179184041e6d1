using LoRI.Tensors;

namespace LoRI.Model;

/// <summary>A named tensor held in a managed byte array (little-endian, row-major).</summary>
public sealed record NamedTensor(string Name, DType DType, int[] Shape, byte[] Data);

/// <summary>
/// Random initialisation of a Llama model the way HF's `_init_weights` does it: every linear and embedding
/// ~ N(0, initializer_range = 0.02), norms = 1. Deterministic from the seed (each tensor its own stream).
/// </summary>
public static class RandomWeights
{
    public static List<NamedTensor> Create(LlamaConfig c, ulong seed, DType dtype, float std = 0.02f)
    {
        if (!dtype.IsFloat() || dtype == DType.F64) throw new ArgumentException($"weights must be F32, F16 or BF16 (found {dtype})");
        var list = new List<NamedTensor>();
        void Normal(string name, int rows, int cols)
        {
            var rng = Rng.ForStream(seed, name);
            var f = new float[(long)rows * cols];
            for (long i = 0; i < f.LongLength; i++) f[i] = (float)(rng.NextGaussian() * std);
            list.Add(new NamedTensor(name, dtype, [rows, cols], Encode(f, dtype)));
        }
        void Ones(string name, int d)
        {
            var f = new float[d];
            Array.Fill(f, 1f);
            list.Add(new NamedTensor(name, dtype, [d], Encode(f, dtype)));
        }
        Normal("model.embed_tokens.weight", c.VocabSize, c.HiddenSize);
        for (int l = 0; l < c.NumLayers; l++)
        {
            Ones($"model.layers.{l}.input_layernorm.weight", c.HiddenSize);
            foreach (var p in Projs.All)
            {
                var (o, i) = p.Shape(c);
                Normal(p.HfPrefix(l) + ".weight", o, i);
            }
            Ones($"model.layers.{l}.post_attention_layernorm.weight", c.HiddenSize);
        }
        Ones("model.norm.weight", c.HiddenSize);
        if (!c.TieWordEmbeddings) Normal("lm_head.weight", c.VocabSize, c.HiddenSize);
        return list;
    }

    /// <summary>Float values to the bytes of a tensor of the given dtype (round to nearest even for bf16).</summary>
    public static byte[] Encode(ReadOnlySpan<float> f, DType dtype)
    {
        switch (dtype)
        {
            case DType.F32:
                return System.Runtime.InteropServices.MemoryMarshal.AsBytes(f).ToArray();
            case DType.BF16:
            {
                var u = new ushort[f.Length];
                Bf16.FromFloat(f, u);
                return System.Runtime.InteropServices.MemoryMarshal.AsBytes(u.AsSpan()).ToArray();
            }
            case DType.F16:
            {
                var u = new ushort[f.Length];
                F16.FromFloat(f, u);
                return System.Runtime.InteropServices.MemoryMarshal.AsBytes(u.AsSpan()).ToArray();
            }
            default:
                throw new ArgumentException($"cannot encode floats as {dtype}");
        }
    }

    /// <summary>Serves NamedTensors to LlamaWeights.Load (pinned, so the CPU backend can alias them).</summary>
    public static Func<string, HostTensor> Source(IEnumerable<NamedTensor> tensors)
    {
        var map = tensors.ToDictionary(t => t.Name);
        return name =>
        {
            if (!map.TryGetValue(name, out var t)) throw new ShapeMismatchException($"tensor '{name}' is missing");
            var h = System.Runtime.InteropServices.GCHandle.Alloc(t.Data, System.Runtime.InteropServices.GCHandleType.Pinned);
            return new HostTensor(h.AddrOfPinnedObject(), t.DType, t.Shape, new PinnedHandle(h));
        };
    }

    private sealed class PinnedHandle(System.Runtime.InteropServices.GCHandle h) : IDisposable
    {
        private System.Runtime.InteropServices.GCHandle _h = h;
        public void Dispose() { if (_h.IsAllocated) _h.Free(); }
    }
}

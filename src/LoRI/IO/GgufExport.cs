using System.Numerics.Tensors;
using System.Text.Json;
using LoRI.Backend.Cpu;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Text;

namespace LoRI.IO;

/// <summary>
/// One adapted projection's low-rank update, however the adapter was loaded: dW = Alpha / Rank * B A, with
/// A [Rank, in] and B [out, Rank] row-major floats, in HF layout (q/k rows in rotate-half order).
/// </summary>
public sealed record GgufLoraModule(int Layer, Proj Proj, int Rank, float Alpha, float[] A, float[] B)
{
    public float Scale => Alpha / Rank;

    /// <summary>The modules of a loaded adapter (alpha = scale * rank, so rsLoRA's alpha / sqrt(r) carries over).</summary>
    public static IReadOnlyList<GgufLoraModule> From(Adapters.LoraAdapter adapter) =>
        adapter.Modules.Select(m => new GgufLoraModule(m.Layer, m.Proj, m.Rank, m.Scale * m.Rank, m.A, m.B)).ToList();
}

/// <summary>
/// Exports to llama.cpp's GGUF: a HF-layout Llama model (optionally with adapters folded in) as a llama-architecture
/// model file, and LoRA/LoRI adapters as GGUF LoRA adapters (`llama-cli --lora`).
///
/// Layout differences from HF that the export takes care of:
/// - tensor names: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
///   ffn_down}, output_norm, output (absent when the embeddings are tied: llama.cpp then reuses token_embd);
/// - rotary pairs: HF rotates (i, i + d/2) within a head, llama.cpp (2i, 2i + 1); the rows of q_proj and k_proj
///   (and of a LoRA B for them) are reordered within each head so that the same pairs rotate together;
/// - llama3 rope scaling: llama.cpp divides each rotary frequency by a stored factor, so the scaled frequencies
///   travel as `rope_freqs.weight` [head_dim/2] = unscaled / scaled;
/// - the tokenizer: byte-level BPE as `gpt2` with the Llama-3 pre-tokenizer (`llama-bpe`), tokens spelled as in
///   tokenizer.json, their types (normal, control for special added tokens, user-defined for other added tokens),
///   and the merges.
/// Norm weights and rope factors stay F32 whatever the requested type, as llama.cpp's converter keeps them.
/// </summary>
public static class GgufExport
{
    public const int TokenNormal = 1, TokenUnknown = 2, TokenControl = 3, TokenUserDefined = 4, TokenUnused = 5;

    /// <summary>llama.cpp's name of a projection: attn_q ... ffn_down.</summary>
    public static string TensorBaseName(Proj p) => p switch
    {
        Proj.Q => "attn_q", Proj.K => "attn_k", Proj.V => "attn_v", Proj.O => "attn_output",
        Proj.Gate => "ffn_gate", Proj.Up => "ffn_up", Proj.Down => "ffn_down",
        _ => throw new ArgumentOutOfRangeException(nameof(p)),
    };

    /// <summary>`blk.{layer}.{attn_q...}.weight`.</summary>
    public static string TensorName(Proj p, int layer) => $"blk.{layer}.{TensorBaseName(p)}.weight";

    /// <summary>
    /// For a q or k weight of <paramref name="heads"/> heads of <paramref name="headDim"/> rows each: the HF row that
    /// goes to row n of the llama.cpp tensor. Within a head, llama.cpp row 2j + t holds HF row t * d/2 + j.
    /// </summary>
    public static int PermutedSourceRow(int n, int headDim)
    {
        int h = n / headDim, k = n % headDim;
        return h * headDim + (k & 1) * (headDim / 2) + (k >> 1);
    }

    /// <summary>The number of heads whose rows a projection's output holds (q: heads, k: KV heads), or 0 when not permuted.</summary>
    public static int PermutedHeads(Proj p, LlamaConfig c) => p switch { Proj.Q => c.NumHeads, Proj.K => c.NumKvHeads, _ => 0 };

    /// <summary>
    /// llama.cpp's rope frequency factors for llama3 scaling: for each rotary pair i, base frequency / scaled frequency
    /// (1 for short wavelengths, factor for long ones, a smooth blend between), or null without scaling.
    /// </summary>
    public static float[]? RopeFactors(LlamaConfig c)
    {
        if (c.RopeScaling is not { } s) return null;
        int half = c.HeadDim / 2;
        var f = new float[half];
        double lowWavelen = s.OriginalMaxPositionEmbeddings / (double)s.LowFreqFactor;
        double highWavelen = s.OriginalMaxPositionEmbeddings / (double)s.HighFreqFactor;
        for (int i = 0; i < half; i++)
        {
            double freq = 1.0 / Math.Pow(c.RopeTheta, 2.0 * i / c.HeadDim);
            double wavelen = 2 * Math.PI / freq;
            if (wavelen < highWavelen) f[i] = 1f;
            else if (wavelen > lowWavelen) f[i] = s.Factor;
            else
            {
                double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                f[i] = (float)(1.0 / ((1 - smooth) / s.Factor + smooth));
            }
        }
        return f;
    }

    /// <summary>
    /// Writes <paramref name="modelDir"/> (config.json, safetensors, tokenizer) as a llama-architecture GGUF. Each
    /// adapter in <paramref name="merge"/> is folded into the weights with its user weight:
    /// W += weight * Alpha / Rank * B A (in float32, before the q/k reordering).
    /// </summary>
    public static void WriteModel(string modelDir, string outPath, GgmlType type = GgmlType.F32,
                                  IReadOnlyList<(IReadOnlyList<GgufLoraModule> Modules, float Weight)>? merge = null)
    {
        var c = LlamaConfig.Load(modelDir);
        var tok = LlamaTokenizer.Load(modelDir);
        using var ckpt = Checkpoint.Open(modelDir);
        c.Validate(ckpt);
        var deltas = GroupDeltas(c, merge);

        var w = new GgufWriter();
        w.Set("general.architecture", "llama");
        w.Set("general.type", "model");
        w.Set("general.name", ModelName(modelDir));
        w.Set("general.file_type", type.FileType());
        w.Set(Gguf.AlignmentKey, (uint)Gguf.DefaultAlignment);
        w.Set("llama.vocab_size", (uint)c.VocabSize);
        w.Set("llama.context_length", (uint)c.MaxPositionEmbeddings);
        w.Set("llama.embedding_length", (uint)c.HiddenSize);
        w.Set("llama.block_count", (uint)c.NumLayers);
        w.Set("llama.feed_forward_length", (uint)c.IntermediateSize);
        w.Set("llama.attention.head_count", (uint)c.NumHeads);
        w.Set("llama.attention.head_count_kv", (uint)c.NumKvHeads);
        w.Set("llama.attention.key_length", (uint)c.HeadDim);
        w.Set("llama.attention.value_length", (uint)c.HeadDim);
        w.Set("llama.rope.dimension_count", (uint)c.HeadDim);
        w.Set("llama.rope.freq_base", c.RopeTheta);
        w.Set("llama.attention.layer_norm_rms_epsilon", c.RmsNormEps);
        AddTokenizer(w, c, tok, modelDir);

        w.AddTensor("token_embd.weight", type, [c.VocabSize, c.HiddenSize], Rows(ckpt, "model.embed_tokens.weight", type, 0, null));
        if (RopeFactors(c) is { } factors) w.AddTensor("rope_freqs.weight", GgmlType.F32, [factors.Length], factors);
        for (int l = 0; l < c.NumLayers; l++)
        {
            w.AddTensor($"blk.{l}.attn_norm.weight", GgmlType.F32, [c.HiddenSize], Rows(ckpt, $"model.layers.{l}.input_layernorm.weight", GgmlType.F32, 0, null));
            foreach (var p in Projs.All)
            {
                var (o, i) = p.Shape(c);
                int heads = PermutedHeads(p, c);
                deltas.TryGetValue((l, p), out var d);
                w.AddTensor(TensorName(p, l), type, [o, i], Rows(ckpt, p.HfPrefix(l) + ".weight", type, heads > 0 ? c.HeadDim : 0, d));
            }
            w.AddTensor($"blk.{l}.ffn_norm.weight", GgmlType.F32, [c.HiddenSize], Rows(ckpt, $"model.layers.{l}.post_attention_layernorm.weight", GgmlType.F32, 0, null));
        }
        w.AddTensor("output_norm.weight", GgmlType.F32, [c.HiddenSize], Rows(ckpt, "model.norm.weight", GgmlType.F32, 0, null));
        if (!c.TieWordEmbeddings)
            w.AddTensor("output.weight", type, [c.VocabSize, c.HiddenSize], Rows(ckpt, "lm_head.weight", type, 0, null));
        CreateParent(outPath);
        w.Write(outPath);
    }

    /// <summary>
    /// Writes adapters as one GGUF LoRA adapter for the model <paramref name="c"/> describes. Several adapters (or
    /// weights other than 1) are combined exactly by concatenation: per module, A = rows(A_i) and
    /// B = cols(weight_i * scale_i * B_i) with scale 1, so dW = sum_i weight_i * scale_i * B_i A_i. A single adapter of
    /// weight 1 whose modules share one Alpha/Rank is written as it is, with its alpha. The file's one alpha gives every
    /// module the scale alpha / rank_module, so any other per-module scale is folded into B.
    /// </summary>
    public static void WriteAdapter(LlamaConfig c, IReadOnlyList<(IReadOnlyList<GgufLoraModule> Modules, float Weight)> adapters,
                                    string outPath, GgmlType type = GgmlType.F32, string? name = null)
    {
        if (adapters.Count == 0) throw new ArgumentException("no adapter to export");
        var modules = Combine(c, adapters);
        if (modules.Count == 0) throw new ArgumentException("the adapter has no modules to export");
        // One alpha for the file: the first module's, so an adapter with one alpha and rank needs no folding.
        float alpha = modules[0].Alpha;

        var w = new GgufWriter();
        w.Set("general.architecture", "llama");
        w.Set("general.type", "adapter");
        w.Set("general.name", name ?? "lori-adapter");
        w.Set("general.file_type", type.FileType());
        w.Set(Gguf.AlignmentKey, (uint)Gguf.DefaultAlignment);
        w.Set("adapter.type", "lora");
        w.Set("adapter.lora.alpha", alpha);
        foreach (var m in modules)
        {
            var (o, i) = m.Proj.Shape(c);
            int r = m.Rank;
            // llama.cpp applies (alpha / r) * B A; fold the module's own scale into B when it differs.
            float fold = m.Scale / (alpha / r);
            int headDim = PermutedHeads(m.Proj, c) > 0 ? c.HeadDim : 0;
            var b = m.B;
            w.AddTensor(TensorName(m.Proj, m.Layer) + ".lora_a", type, [r, i], m.A);
            w.AddTensor(TensorName(m.Proj, m.Layer) + ".lora_b", type, [o, r], RowSource(o, r, type, (row, dst) =>
            {
                int src = headDim > 0 ? PermutedSourceRow(row, headDim) : row;
                var s = b.AsSpan(src * r, r);
                if (fold == 1f) s.CopyTo(dst);
                else TensorPrimitives.Multiply(s, fold, dst);
            }));
        }
        CreateParent(outPath);
        w.Write(outPath);
    }

    /// <summary>Checks shapes against the config and combines weighted adapters per module (see <see cref="WriteAdapter"/>).</summary>
    private static List<GgufLoraModule> Combine(LlamaConfig c, IReadOnlyList<(IReadOnlyList<GgufLoraModule> Modules, float Weight)> adapters)
    {
        foreach (var (mods, _) in adapters)
            foreach (var m in mods) CheckModule(c, m);
        if (adapters.Count == 1 && adapters[0].Weight == 1f) return adapters[0].Modules.OrderBy(m => m.Layer).ThenBy(m => m.Proj).ToList();
        var groups = new SortedDictionary<(int, Proj), List<(GgufLoraModule M, float W)>>();
        foreach (var (mods, wt) in adapters)
            foreach (var m in mods)
            {
                if (!groups.TryGetValue((m.Layer, m.Proj), out var g)) groups[(m.Layer, m.Proj)] = g = new();
                g.Add((m, wt));
            }
        var result = new List<GgufLoraModule>();
        foreach (var ((layer, p), list) in groups)
        {
            var (o, i) = p.Shape(c);
            int R = list.Sum(x => x.M.Rank);
            var a = new float[(long)R * i];
            var b = new float[(long)o * R];
            int k0 = 0;
            foreach (var (m, wt) in list)
            {
                m.A.AsSpan().CopyTo(a.AsSpan(k0 * i));
                float s = wt * m.Scale;
                for (int row = 0; row < o; row++)
                    TensorPrimitives.Multiply(m.B.AsSpan(row * m.Rank, m.Rank), s, b.AsSpan(row * R + k0, m.Rank));
                k0 += m.Rank;
            }
            result.Add(new GgufLoraModule(layer, p, R, R, a, b));
        }
        return result;
    }

    private static void CheckModule(LlamaConfig c, GgufLoraModule m)
    {
        var (o, i) = m.Proj.Shape(c);
        string where = $"adapter module layers.{m.Layer}.{m.Proj.ModuleName()}";
        if (m.Layer < 0 || m.Layer >= c.NumLayers)
            throw new ShapeMismatchException($"{where}: layer {m.Layer} is outside the model's {c.NumLayers} layers");
        if (m.Rank <= 0) throw new ShapeMismatchException($"{where}: rank {m.Rank} must be positive");
        if (m.A.LongLength != (long)m.Rank * i)
            throw new ShapeMismatchException($"{where}: A holds {m.A.LongLength} values, expected [{m.Rank}, {i}] = {(long)m.Rank * i}");
        if (m.B.LongLength != (long)o * m.Rank)
            throw new ShapeMismatchException($"{where}: B holds {m.B.LongLength} values, expected [{o}, {m.Rank}] = {(long)o * m.Rank}");
        if (!float.IsFinite(m.Alpha) || m.Alpha == 0)
            throw new ShapeMismatchException($"{where}: alpha {m.Alpha} must be finite and non-zero");
    }

    private static Dictionary<(int, Proj), List<(float Scale, GgufLoraModule M)>> GroupDeltas(
        LlamaConfig c, IReadOnlyList<(IReadOnlyList<GgufLoraModule> Modules, float Weight)>? merge)
    {
        var d = new Dictionary<(int, Proj), List<(float, GgufLoraModule)>>();
        if (merge is null) return d;
        foreach (var (mods, wt) in merge)
            foreach (var m in mods)
            {
                CheckModule(c, m);
                if (!d.TryGetValue((m.Layer, m.Proj), out var list)) d[(m.Layer, m.Proj)] = list = new();
                list.Add((wt * m.Scale, m));
            }
        return d;
    }

    /// <summary>
    /// A fill for a tensor of the checkpoint: each output row is source row (permuted within heads of
    /// <paramref name="headDim"/> rows when that is non-zero) in float32, plus the merged adapter deltas, encoded as
    /// <paramref name="type"/>. 1-D tensors are one row.
    /// </summary>
    private static TensorFill Rows(Checkpoint ckpt, string name, GgmlType type, int headDim, List<(float Scale, GgufLoraModule M)>? deltas)
    {
        var (file, entry) = ckpt.Get(name);
        if (!entry.DType.IsFloat() || entry.DType == DType.F64)
            throw new UnsupportedException($"{file.Path}: tensor '{name}' is {entry.DType.SafetensorsName()}; export reads F32, F16 or BF16");
        int rows = entry.Shape.Length == 1 ? 1 : entry.Shape[0];
        int cols = entry.Shape[^1];
        nint ptr = file.Pointer(entry);
        var dtype = entry.DType;
        return RowSource(rows, cols, type, (row, dst) =>
        {
            int src = headDim > 0 ? PermutedSourceRow(row, headDim) : row;
            CpuOps.ToFloat(dtype, ptr, (long)src * cols, dst);
            if (deltas is null) return;
            foreach (var (s, m) in deltas)
                for (int k = 0; k < m.Rank; k++)
                {
                    float coef = s * m.B[(long)src * m.Rank + k];
                    if (coef != 0) TensorPrimitives.MultiplyAdd(m.A.AsSpan(k * cols, cols), coef, dst, dst);
                }
        });
    }

    /// <summary>Turns a row producer into a chunked fill; a row split across two chunks is produced twice.</summary>
    private static TensorFill RowSource(int rows, int cols, GgmlType type, Action<int, Span<float>> row)
    {
        int es = type.Size();
        long rowBytes = (long)cols * es;
        var f = new float[cols];
        var rb = new byte[rowBytes];
        int current = -1;
        return (dst, offset) =>
        {
            int w = 0;
            while (w < dst.Length)
            {
                long pos = offset + w;
                int r = (int)(pos / rowBytes);
                int inRow = (int)(pos - r * rowBytes);
                if (r >= rows) throw new InvalidOperationException($"row {r} requested from a tensor of {rows} rows");
                if (r != current)
                {
                    row(r, f);
                    GgufEncode.EncodeRange(f, type, rb);
                    current = r;
                }
                int take = (int)Math.Min(rowBytes - inRow, dst.Length - w);
                rb.AsSpan(inRow, take).CopyTo(dst[w..]);
                w += take;
            }
        };
    }

    private static void AddTokenizer(GgufWriter w, LlamaConfig c, LlamaTokenizer tok, string modelDir)
    {
        if (tok.VocabSize > c.VocabSize)
            throw new ShapeMismatchException($"{tok.Source}: the tokenizer has {tok.VocabSize} tokens, more than the model's vocab_size {c.VocabSize}");
        var tokens = new string[c.VocabSize];
        var types = new int[c.VocabSize];
        var added = new Dictionary<int, bool>();
        foreach (var (id, _, special) in tok.AddedTokens) added[id] = special;
        for (int id = 0; id < c.VocabSize; id++)
        {
            string? t = null;
            if (id < tok.VocabSize)
            {
                try { t = tok.IdToToken(id); }
                catch (ArgumentOutOfRangeException) { t = null; }
            }
            if (t is null)
            {
                // Ids the tokenizer never produces (a vocab padded for the embedding matrix): unused placeholders.
                tokens[id] = $"[PAD{id}]";
                types[id] = TokenUnused;
                continue;
            }
            tokens[id] = t;
            types[id] = added.TryGetValue(id, out bool sp) ? (sp ? TokenControl : TokenUserDefined) : TokenNormal;
        }
        w.Set("tokenizer.ggml.model", "gpt2");
        w.Set("tokenizer.ggml.pre", "llama-bpe");
        w.Set("tokenizer.ggml.tokens", tokens);
        w.Set("tokenizer.ggml.token_type", types);
        w.Set("tokenizer.ggml.merges", tok.Merges.ToArray());
        int? bos = c.BosTokenId ?? tok.BosId;
        int? eos = c.EosTokenIds.Length > 0 ? c.EosTokenIds[0] : tok.EosIds.Count > 0 ? tok.EosIds[0] : null;
        if (bos is int b) w.Set("tokenizer.ggml.bos_token_id", (uint)b);
        if (eos is int e) w.Set("tokenizer.ggml.eos_token_id", (uint)e);
        if (tok.TokenToId("<|eot_id|>") is int eot) w.Set("tokenizer.ggml.eot_token_id", (uint)eot);
        w.Set("tokenizer.ggml.add_bos_token", bos is not null);
        w.Set("tokenizer.ggml.add_eos_token", false);
        if (ChatTemplate(modelDir) is { } tmpl) w.Set("tokenizer.chat_template", tmpl);
    }

    private static string? ChatTemplate(string modelDir)
    {
        var path = Path.Combine(modelDir, "tokenizer_config.json");
        if (!File.Exists(path)) return null;
        using var doc = JsonFile.Read(path, LlamaTokenizer.MaxConfigBytes, "tokenizer_config.json");
        return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("chat_template", out var t)
               && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
    }

    private static string ModelName(string modelDir)
    {
        var n = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDir)));
        return string.IsNullOrEmpty(n) ? "model" : n;
    }

    private static void CreateParent(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
    }
}

using System.Text;
using System.Text.Json;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Runner.Verbs;

/// <summary>
/// `info --model DIR [--json]`: the config, the parameter count, the bytes of the weights as the checkpoint
/// stores them (per dtype) and the KV-cache bytes per token. The checkpoint, when present, is validated
/// against the config; a folder with only config.json reports the weight size implied by torch_dtype.
/// </summary>
public static class InfoVerb
{
    public static readonly Verb Verb = new("info", "config, parameter count and memory of a model",
        "info --model DIR [--json]", Run);

    private sealed record WeightSummary(bool FromCheckpoint, long Bytes, SortedDictionary<string, long> BytesByDType, int Files);

    private static int Run(Args a)
    {
        var dir = a.Require("model");
        bool json = a.Flag("json");
        a.EnsureAllUsed();

        var config = LlamaConfig.Load(dir);
        var weights = Weights(dir, config);
        long kvPerToken = KvCache.BytesPerToken(config);
        if (json) PrintJson(dir, config, weights, kvPerToken);
        else PrintText(dir, config, weights, kvPerToken);
        return 0;
    }

    private static WeightSummary Weights(string dir, LlamaConfig c)
    {
        var byDType = new SortedDictionary<string, long>(StringComparer.Ordinal);
        if (!Checkpoint.Exists(dir))
        {
            var dt = DTypes.ParseFloat(c.TorchDtype);
            long bytes = c.ParameterCount * dt.Size();
            byDType[dt.SafetensorsName()] = bytes;
            return new WeightSummary(false, bytes, byDType, 0);
        }
        using var ckpt = Checkpoint.Open(dir);
        c.Validate(ckpt);
        long total = 0;
        foreach (var (name, _) in c.ExpectedTensors())
        {
            var (_, e) = ckpt.Get(name);
            var key = e.DType.SafetensorsName();
            byDType[key] = byDType.GetValueOrDefault(key) + e.ByteLength;
            total += e.ByteLength;
        }
        return new WeightSummary(true, total, byDType, ckpt.Files.Count);
    }

    private static string F(float v) => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture).Replace('E', 'e');

    private static string N(long v) => v.ToString("N0", System.Globalization.CultureInfo.InvariantCulture);

    private static void PrintText(string dir, LlamaConfig c, WeightSummary w, long kv)
    {
        var o = Console.Out;
        o.WriteLine($"model           {dir}");
        o.WriteLine($"architecture    LlamaForCausalLM (llama), torch_dtype {c.TorchDtype}");
        o.WriteLine($"layers          {c.NumLayers}");
        o.WriteLine($"hidden size     {c.HiddenSize}");
        o.WriteLine($"intermediate    {c.IntermediateSize}");
        o.WriteLine($"heads           {c.NumHeads} query, {c.NumKvHeads} key/value, head dim {c.HeadDim}");
        o.WriteLine($"vocab size      {c.VocabSize}");
        o.WriteLine($"max positions   {c.MaxPositionEmbeddings}");
        var scaling = c.RopeScaling is { } s
            ? $", llama3 scaling (factor {F(s.Factor)}, low {F(s.LowFreqFactor)}, high {F(s.HighFreqFactor)}, original {s.OriginalMaxPositionEmbeddings})"
            : "";
        o.WriteLine($"rope theta      {F(c.RopeTheta)}{scaling}");
        o.WriteLine($"rms norm eps    {F(c.RmsNormEps)}");
        o.WriteLine($"tied embeddings {(c.TieWordEmbeddings ? "yes" : "no")}");
        o.WriteLine($"bos / eos       {(c.BosTokenId?.ToString() ?? "none")} / {(c.EosTokenIds.Length == 0 ? "none" : string.Join(", ", c.EosTokenIds))}");
        o.WriteLine($"parameters      {N(c.ParameterCount)}");
        var parts = string.Join(", ", w.BytesByDType.Select(kv => $"{kv.Key} {N(kv.Value)}"));
        o.WriteLine(w.FromCheckpoint
            ? $"weights         {N(w.Bytes)} bytes ({parts}) in {w.Files} file{(w.Files == 1 ? "" : "s")}"
            : $"weights         {N(w.Bytes)} bytes at {c.TorchDtype} (no checkpoint in the folder)");
        o.WriteLine($"kv cache        {N(kv)} bytes per token (F32 keys and values, all layers)");
    }

    private static void PrintJson(string dir, LlamaConfig c, WeightSummary w, long kv)
    {
        using var ms = new MemoryStream();
        using (var j = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            j.WriteStartObject();
            j.WriteString("model", dir);
            j.WriteStartObject("config");
            j.WriteNumber("hidden_size", c.HiddenSize);
            j.WriteNumber("intermediate_size", c.IntermediateSize);
            j.WriteNumber("num_hidden_layers", c.NumLayers);
            j.WriteNumber("num_attention_heads", c.NumHeads);
            j.WriteNumber("num_key_value_heads", c.NumKvHeads);
            j.WriteNumber("head_dim", c.HeadDim);
            j.WriteNumber("vocab_size", c.VocabSize);
            j.WriteNumber("max_position_embeddings", c.MaxPositionEmbeddings);
            j.WriteNumber("rope_theta", c.RopeTheta);
            if (c.RopeScaling is { } s)
            {
                j.WriteStartObject("rope_scaling");
                j.WriteString("rope_type", "llama3");
                j.WriteNumber("factor", s.Factor);
                j.WriteNumber("low_freq_factor", s.LowFreqFactor);
                j.WriteNumber("high_freq_factor", s.HighFreqFactor);
                j.WriteNumber("original_max_position_embeddings", s.OriginalMaxPositionEmbeddings);
                j.WriteEndObject();
            }
            else j.WriteNull("rope_scaling");
            j.WriteNumber("rms_norm_eps", c.RmsNormEps);
            j.WriteBoolean("tie_word_embeddings", c.TieWordEmbeddings);
            if (c.BosTokenId is int bos) j.WriteNumber("bos_token_id", bos); else j.WriteNull("bos_token_id");
            j.WriteStartArray("eos_token_id");
            foreach (var e in c.EosTokenIds) j.WriteNumberValue(e);
            j.WriteEndArray();
            j.WriteString("torch_dtype", c.TorchDtype);
            j.WriteEndObject();
            j.WriteNumber("parameters", c.ParameterCount);
            j.WriteNumber("weight_bytes", w.Bytes);
            j.WriteBoolean("weights_from_checkpoint", w.FromCheckpoint);
            j.WriteStartObject("weight_bytes_by_dtype");
            foreach (var (k, v) in w.BytesByDType) j.WriteNumber(k, v);
            j.WriteEndObject();
            j.WriteNumber("checkpoint_files", w.Files);
            j.WriteNumber("kv_cache_bytes_per_token", kv);
            j.WriteEndObject();
        }
        Console.Out.WriteLine(Encoding.UTF8.GetString(ms.ToArray()));
    }
}

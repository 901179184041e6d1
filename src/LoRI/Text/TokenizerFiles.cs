using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using LoRI.IO;

namespace LoRI.Text;

/// <summary>What <see cref="TokenizerFiles.WriteByteLevel"/> wrote: sizes and the ids of its special tokens.</summary>
public sealed record ByteLevelVocab(int VocabSize, int MergeCount, int BosId, int EosId, int EotId, int PadId,
    int StartHeaderId, int EndHeaderId)
{
    /// <summary>Ids that end generation (end of text, end of turn).</summary>
    public int[] EosIds => [EosId, EotId];
}

/// <summary>
/// Writes small tokenizers in Hugging Face's tokenizer.json format, for tiny and small random models.
/// </summary>
public static class TokenizerFiles
{
    /// <summary>Llama-3's special tokens, in the order they follow the byte and merge tokens here.</summary>
    public static readonly string[] SpecialTokens =
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"];

    public const int MaxMerges = 1 << 16;

    /// <summary>
    /// Writes tokenizer.json and tokenizer_config.json for a byte-level BPE vocabulary:
    /// ids 0..255 are the single bytes (id = byte value, spelled with GPT-2's byte-to-character table), then up to
    /// <paramref name="maxMerges"/> merges learned from <paramref name="corpus"/>, then Llama-3's special tokens.
    ///
    /// Merge learning (deterministic): the corpus is split with Llama-3's pre-tokenizer regex, each piece is a
    /// sequence of byte tokens weighted by how often the piece occurs; repeatedly the adjacent pair with the
    /// highest total count is merged into a new token (ties: the smallest left id, then the smallest right id),
    /// until <paramref name="maxMerges"/> merges exist or no pair occurs twice. A pair whose bytes already form a
    /// token is never merged again, so every token has one spelling. The pre-tokenizer and BPE are Llama-3's, so
    /// any UTF-8 text round-trips.
    /// </summary>
    public static ByteLevelVocab WriteByteLevel(string dir, IEnumerable<string>? corpus = null, int maxMerges = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxMerges);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxMerges, MaxMerges);
        Directory.CreateDirectory(dir);

        var tokens = new List<byte[]>(256 + maxMerges);
        for (int b = 0; b < 256; b++) tokens.Add([(byte)b]);
        var merges = maxMerges > 0 && corpus is not null ? LearnMerges(corpus, maxMerges, tokens) : [];

        int first = tokens.Count;
        var ids = SpecialTokens.Select((s, i) => (s, id: first + i)).ToDictionary(x => x.s, x => x.id);
        int vocabSize = first + SpecialTokens.Length;

        AtomicFile.Write(Path.Combine(dir, "tokenizer.json"), TokenizerJson(tokens, merges, ids));
        AtomicFile.Write(Path.Combine(dir, "tokenizer_config.json"), TokenizerConfigJson(ids));
        return new ByteLevelVocab(vocabSize, merges.Count, ids["<|begin_of_text|>"], ids["<|end_of_text|>"], ids["<|eot_id|>"],
            ids["<|finetune_right_pad_id|>"], ids["<|start_header_id|>"], ids["<|end_header_id|>"]);
    }

    private static List<(int Left, int Right)> LearnMerges(IEnumerable<string> corpus, int maxMerges, List<byte[]> tokens)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var text in corpus)
            foreach (var (offset, length) in Llama3PreTokenizer.Split(text))
            {
                var piece = text.Substring(offset, length);
                counts[piece] = counts.GetValueOrDefault(piece) + 1;
            }
        // Words in a fixed order (ordinal) so that nothing depends on hash order.
        var words = counts.OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => (Symbols: Encoding.UTF8.GetBytes(kv.Key).Select(b => (int)b).ToList(), Count: kv.Value))
            .ToList();

        var spelled = new HashSet<string>(tokens.Select(t => Convert.ToHexString(t)), StringComparer.Ordinal);
        var banned = new HashSet<(int, int)>();
        var merges = new List<(int, int)>();
        var pairCounts = new Dictionary<(int, int), long>();
        while (merges.Count < maxMerges)
        {
            pairCounts.Clear();
            foreach (var (sym, c) in words)
                for (int i = 0; i + 1 < sym.Count; i++)
                {
                    var p = (sym[i], sym[i + 1]);
                    if (!banned.Contains(p)) pairCounts[p] = pairCounts.GetValueOrDefault(p) + c;
                }
            (int L, int R) best = (-1, -1);
            long bestCount = 1;
            foreach (var (p, c) in pairCounts)
                if (c > bestCount || (c == bestCount && best.L >= 0 && (p.Item1 < best.L || (p.Item1 == best.L && p.Item2 < best.R))))
                {
                    best = p;
                    bestCount = c;
                }
            if (best.L < 0) break;
            var bytes = tokens[best.L].Concat(tokens[best.R]).ToArray();
            if (!spelled.Add(Convert.ToHexString(bytes)))
            {
                banned.Add(best);
                continue;
            }
            int id = tokens.Count;
            tokens.Add(bytes);
            merges.Add(best);
            foreach (var (sym, _) in words)
                for (int i = 0; i + 1 < sym.Count; i++)
                    if (sym[i] == best.L && sym[i + 1] == best.R)
                    {
                        sym[i] = id;
                        sym.RemoveAt(i + 1);
                    }
        }
        return merges;
    }

    private static readonly JsonWriterOptions Relaxed = new() { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static ReadOnlySpan<byte> TokenizerJson(List<byte[]> tokens, List<(int Left, int Right)> merges, Dictionary<string, int> specials)
    {
        var buf = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buf, Relaxed))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            foreach (var (content, id) in specials.OrderBy(kv => kv.Value))
            {
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", content);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");

            w.WriteStartObject("pre_tokenizer");
            w.WriteString("type", "Sequence");
            w.WriteStartArray("pretokenizers");
            w.WriteStartObject();
            w.WriteString("type", "Split");
            w.WriteStartObject("pattern");
            w.WriteString("Regex", LlamaTokenizer.Llama3Pattern);
            w.WriteEndObject();
            w.WriteString("behavior", "Isolated");
            w.WriteBoolean("invert", false);
            w.WriteEndObject();
            WriteByteLevelStep(w, addPrefixSpace: false, trimOffsets: true, useRegex: false);
            w.WriteEndArray();
            w.WriteEndObject();

            w.WritePropertyName("post_processor");
            WriteByteLevelStep(w, addPrefixSpace: true, trimOffsets: false, useRegex: true);
            w.WritePropertyName("decoder");
            WriteByteLevelStep(w, addPrefixSpace: true, trimOffsets: true, useRegex: true);

            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout");
            w.WriteNull("unk_token");
            w.WriteNull("continuing_subword_prefix");
            w.WriteNull("end_of_word_suffix");
            w.WriteBoolean("fuse_unk", false);
            w.WriteBoolean("byte_fallback", false);
            w.WriteBoolean("ignore_merges", true);
            w.WriteStartObject("vocab");
            for (int id = 0; id < tokens.Count; id++) w.WriteNumber(ByteLevel.Encode(tokens[id]), id);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (l, r) in merges) w.WriteStringValue(ByteLevel.Encode(tokens[l]) + " " + ByteLevel.Encode(tokens[r]));
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return buf.WrittenSpan;
    }

    private static void WriteByteLevelStep(Utf8JsonWriter w, bool addPrefixSpace, bool trimOffsets, bool useRegex)
    {
        w.WriteStartObject();
        w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", addPrefixSpace);
        w.WriteBoolean("trim_offsets", trimOffsets);
        w.WriteBoolean("use_regex", useRegex);
        w.WriteEndObject();
    }

    /// <summary>A Jinja chat template that renders what <see cref="ChatTemplate.Llama3"/> renders.</summary>
    public const string Llama3ChatTemplateJinja =
        "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}" +
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (message['content'] | trim) + '<|eot_id|>' }}" +
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    private static ReadOnlySpan<byte> TokenizerConfigJson(Dictionary<string, int> specials)
    {
        var buf = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buf, Relaxed))
        {
            w.WriteStartObject();
            w.WriteStartObject("added_tokens_decoder");
            foreach (var (content, id) in specials.OrderBy(kv => kv.Value))
            {
                w.WriteStartObject(id.ToString(System.Globalization.CultureInfo.InvariantCulture));
                w.WriteString("content", content);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndObject();
            w.WriteString("bos_token", "<|begin_of_text|>");
            w.WriteString("chat_template", Llama3ChatTemplateJinja);
            w.WriteBoolean("clean_up_tokenization_spaces", false);
            w.WriteString("eos_token", "<|end_of_text|>");
            w.WriteString("pad_token", "<|finetune_right_pad_id|>");
            w.WriteStartArray("model_input_names");
            w.WriteStringValue("input_ids");
            w.WriteStringValue("attention_mask");
            w.WriteEndArray();
            w.WriteNumber("model_max_length", 131072);
            w.WriteString("tokenizer_class", "PreTrainedTokenizerFast");
            w.WriteEndObject();
        }
        return buf.WrittenSpan;
    }
}

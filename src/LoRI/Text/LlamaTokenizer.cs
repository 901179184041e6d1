using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using LoRI.IO;
using Microsoft.ML.Tokenizers;

namespace LoRI.Text;

/// <summary>
/// The Llama-3 tokenizer: byte-level BPE over a regex pre-tokenizer, plus added (special) tokens such as
/// &lt;|begin_of_text|&gt; matched in the text before BPE runs. Produces the same ids as Hugging Face's
/// `tokenizers` for Llama-3's tokenizer.json (checked against HF's output in the tests).
///
/// Two sources, as a model folder may hold either:
/// - tokenizer.json (HF): model.vocab + model.merges + added_tokens; BPE runs through Microsoft.ML.Tokenizers'
///   BpeTokenizer with ByteLevel = true;
/// - original/tokenizer.model (Meta's tiktoken ranks, `base64(bytes) rank` per line): BPE runs through
///   Microsoft.ML.Tokenizers' TiktokenTokenizer; the special tokens follow the ranks with the names Meta gives
///   them (or those of tokenizer_config.json's added_tokens_decoder when present).
/// Added tokens are matched here (leftmost, then longest) so that `parseSpecial = false` can turn them off;
/// decoding maps ids to bytes and decodes UTF-8 with U+FFFD for invalid sequences (no clean-up of spaces
/// around punctuation, unlike HF's clean_up_tokenization_spaces, so decode(encode(s)) == s).
/// </summary>
public sealed class LlamaTokenizer
{
    /// <summary>Llama-3's pre-tokenizer regex (Meta's and HF's; .NET reads it the same way).</summary>
    public const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>GPT-2's regex, which a ByteLevel pre-tokenizer with use_regex = true applies.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public const long MaxTokenizerJsonBytes = 256L << 20;
    public const long MaxTiktokenBytes = 64L << 20;
    public const long MaxConfigBytes = 16L << 20;
    public const int MaxVocab = 1 << 22;
    public const int MaxTokenChars = 1024;

    private readonly Tokenizer _core;
    private readonly byte[]?[] _bytes;
    private readonly string?[] _tokens;
    private readonly bool[] _special;
    private readonly Dictionary<string, int> _ids;
    private readonly Dictionary<char, AddedToken[]> _addedByFirstChar;
    private readonly int[] _eos;
    private IReadOnlyList<string>? _merges;

    internal sealed record AddedToken(int Id, string Content, bool Special);

    /// <summary>The file the vocabulary came from (tokenizer.json or tokenizer.model).</summary>
    public string Source { get; }
    /// <summary>One past the largest id (128256 for Llama-3).</summary>
    public int VocabSize => _bytes.Length;
    public int? BosId { get; }
    /// <summary>Ids that end generation: tokenizer_config's eos_token, then &lt;|eot_id|&gt;, &lt;|eom_id|&gt;, &lt;|end_of_text|&gt; when present.</summary>
    public IReadOnlyList<int> EosIds => _eos;
    /// <summary>The added tokens, in id order.</summary>
    public IReadOnlyList<(int Id, string Content, bool Special)> AddedTokens { get; }

    private LlamaTokenizer(string source, Tokenizer core, IReadOnlyDictionary<int, string> vocab, IReadOnlyList<AddedToken> added,
        string? bosName, IReadOnlyList<string> eosNames)
    {
        Source = source;
        _core = core;
        int size = 0;
        foreach (var id in vocab.Keys) size = Math.Max(size, id + 1);
        foreach (var a in added) size = Math.Max(size, a.Id + 1);
        _bytes = new byte[]?[size];
        _tokens = new string?[size];
        _special = new bool[size];
        _ids = new Dictionary<string, int>(size, StringComparer.Ordinal);
        foreach (var (id, tok) in vocab)
        {
            _tokens[id] = tok;
            _bytes[id] = ByteLevel.TryDecode(tok) ?? throw new InvalidFileException(source, $"token {id} '{tok}' is not spelled in byte-level characters");
            _ids[tok] = id;
        }
        foreach (var a in added)
        {
            _tokens[a.Id] = a.Content;
            _bytes[a.Id] = Encoding.UTF8.GetBytes(a.Content);
            _special[a.Id] = a.Special;
            _ids[a.Content] = a.Id;
        }
        foreach (var b in _bytes) if (b is not null) MaxTokenBytes = Math.Max(MaxTokenBytes, b.Length);
        _addedByFirstChar = added.GroupBy(a => a.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(a => a.Content.Length).ToArray());
        AddedTokens = added.OrderBy(a => a.Id).Select(a => (a.Id, a.Content, a.Special)).ToArray();

        if (bosName is not null && _ids.TryGetValue(bosName, out var bos)) BosId = bos;
        else if (_ids.TryGetValue("<|begin_of_text|>", out bos)) BosId = bos;
        var eos = new List<int>();
        foreach (var name in eosNames.Concat(["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"]))
            if (_ids.TryGetValue(name, out var id) && !eos.Contains(id)) eos.Add(id);
        _eos = eos.ToArray();
    }

    /// <summary>
    /// Loads the tokenizer of a model folder: tokenizer.json when present, else original/tokenizer.model
    /// (or tokenizer.model). tokenizer_config.json, when present, names the BOS and EOS tokens.
    /// </summary>
    public static LlamaTokenizer Load(string dir)
    {
        if (!Directory.Exists(dir)) throw new InvalidFileException(dir, "tokenizer folder not found");
        var cfg = TokenizerConfig.Read(Path.Combine(dir, "tokenizer_config.json"));
        var json = Path.Combine(dir, "tokenizer.json");
        if (File.Exists(json)) return FromTokenizerJson(json, cfg);
        foreach (var rel in new[] { Path.Combine("original", "tokenizer.model"), "tokenizer.model" })
        {
            var p = Path.Combine(dir, rel);
            if (File.Exists(p)) return FromTiktoken(p, cfg);
        }
        throw new InvalidFileException(dir, "no tokenizer found: expected tokenizer.json or original/tokenizer.model");
    }

    // ---------------------------------------------------------------- tokenizer.json

    private static LlamaTokenizer FromTokenizerJson(string path, TokenizerConfig cfg)
    {
        using var doc = JsonFile.Read(path, MaxTokenizerJsonBytes, "tokenizer.json");
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, $"expected a JSON object, found {root.ValueKind}");

        if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind != JsonValueKind.Null)
            throw new UnsupportedException($"{path}: field normalizer: found {Describe(norm)}, only null (Llama-3) is supported");
        var pattern = PreTokenizerPattern(path, root);

        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidFileException(path, "missing object field \"model\"");
        var type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        if (type != "BPE") throw new UnsupportedException($"{path}: field model.type: found {(type ?? "nothing")}, only BPE is supported");
        foreach (var f in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (!model.TryGetProperty(f, out var v) || v.ValueKind == JsonValueKind.Null) continue;
            if (v.ValueKind != JsonValueKind.String)
                throw new InvalidFileException(path, $"field model.{f}: found {Describe(v)}, expected a string or null");
            if (v.GetString()!.Length > 0)
                throw new UnsupportedException($"{path}: field model.{f}: found \"{Clip(v.GetString()!)}\", only null (byte-level BPE) is supported");
        }
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
            throw new UnsupportedException($"{path}: field model.byte_fallback: true is not supported (byte-level BPE needs none)");

        if (!model.TryGetProperty("vocab", out var vocabEl) || vocabEl.ValueKind != JsonValueKind.Object)
            throw new InvalidFileException(path, "missing object field \"model.vocab\"");
        var vocab = new Dictionary<int, string>();
        var vocabPairs = new List<KeyValuePair<string, int>>();
        foreach (var p in vocabEl.EnumerateObject())
        {
            int id = ReadId(path, $"model.vocab['{Clip(p.Name)}']", p.Value);
            if (p.Name.Length == 0 || p.Name.Length > MaxTokenChars)
                throw new InvalidFileException(path, $"model.vocab: token {id} has length {p.Name.Length}, expected 1..{MaxTokenChars}");
            if (!vocab.TryAdd(id, p.Name))
                throw new InvalidFileException(path, $"model.vocab: id {id} is given to both '{Clip(vocab[id])}' and '{Clip(p.Name)}'");
            if (ByteLevel.TryDecode(p.Name) is null)
                throw new UnsupportedException($"{path}: model.vocab: token {id} '{Clip(p.Name)}' is not spelled in GPT-2 byte-level characters; only byte-level BPE is supported");
            vocabPairs.Add(new(p.Name, id));
        }
        var known = new HashSet<string>(vocabPairs.Select(kv => kv.Key), StringComparer.Ordinal);
        for (int b = 0; b < 256; b++)
            if (!known.Contains(ByteLevel.Char((byte)b).ToString()))
                throw new InvalidFileException(path, $"model.vocab lacks the token for byte 0x{b:X2} ('{ByteLevel.Char((byte)b)}'): a byte-level vocabulary needs all 256");

        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var mergesEl) && mergesEl.ValueKind != JsonValueKind.Null)
        {
            if (mergesEl.ValueKind != JsonValueKind.Array) throw new InvalidFileException(path, "field model.merges: expected an array");
            int i = 0;
            foreach (var m in mergesEl.EnumerateArray())
            {
                string a, b;
                if (m.ValueKind == JsonValueKind.String)
                {
                    var s = m.GetString()!;
                    int sp = s.IndexOf(' ');
                    if (sp <= 0 || sp == s.Length - 1 || s.IndexOf(' ', sp + 1) >= 0)
                        throw new InvalidFileException(path, $"model.merges[{i}] = '{Clip(s)}' is not two tokens separated by one space");
                    a = s[..sp];
                    b = s[(sp + 1)..];
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                         && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                {
                    a = m[0].GetString()!;
                    b = m[1].GetString()!;
                }
                else throw new InvalidFileException(path, $"model.merges[{i}] is {Describe(m)}, expected \"a b\" or [\"a\", \"b\"]");
                if (!known.Contains(a) || !known.Contains(b) || !known.Contains(a + b))
                    throw new InvalidFileException(path, $"model.merges[{i}] = '{Clip(a)} {Clip(b)}' uses a token missing from model.vocab");
                merges.Add(a + " " + b);
                i++;
            }
        }

        var added = ReadAddedTokens(path, root, vocab);
        var core = BpeTokenizer.Create(new BpeOptions(vocabPairs)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = CreatePreTokenizer(pattern),
        });
        return new LlamaTokenizer(path, core, vocab, added, cfg.BosToken, cfg.EosTokens) { _merges = merges };
    }

    /// <summary>Llama-3's pattern runs through the code-point scanner; others through a Regex.</summary>
    private static PreTokenizer CreatePreTokenizer(string pattern) =>
        pattern == Llama3Pattern ? Llama3PreTokenizer.Instance : new RegexPreTokenizer(PreTokenizerRegex.Create(pattern), null);

    private static string PreTokenizerPattern(string path, JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pt) || pt.ValueKind != JsonValueKind.Object)
            throw new UnsupportedException($"{path}: field pre_tokenizer: expected a ByteLevel or Split + ByteLevel pre-tokenizer");
        var type = pt.TryGetProperty("type", out var t) ? t.GetString() : null;
        if (type == "ByteLevel")
        {
            if (pt.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True)
                throw new UnsupportedException($"{path}: field pre_tokenizer.add_prefix_space: true is not supported");
            return pt.TryGetProperty("use_regex", out var ur) && ur.ValueKind == JsonValueKind.False ? "(?s).+" : Gpt2Pattern;
        }
        if (type == "Sequence" && pt.TryGetProperty("pretokenizers", out var seq) && seq.ValueKind == JsonValueKind.Array
            && seq.GetArrayLength() == 2)
        {
            var split = seq[0];
            var bl = seq[1];
            if (split.TryGetProperty("type", out var st) && st.GetString() == "Split"
                && split.TryGetProperty("pattern", out var pat) && pat.ValueKind == JsonValueKind.Object
                && pat.TryGetProperty("Regex", out var rx) && rx.ValueKind == JsonValueKind.String
                && split.TryGetProperty("behavior", out var beh) && beh.GetString() == "Isolated"
                && !(split.TryGetProperty("invert", out var inv) && inv.ValueKind == JsonValueKind.True)
                && bl.TryGetProperty("type", out var bt) && bt.GetString() == "ByteLevel"
                && bl.TryGetProperty("use_regex", out var ur) && ur.ValueKind == JsonValueKind.False
                && !(bl.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True))
            {
                var pattern = rx.GetString()!;
                if (pattern.Length > 4096) throw new InvalidFileException(path, "pre_tokenizer regex is longer than 4096 characters");
                try { _ = new Regex(pattern, RegexOptions.CultureInvariant); }
                catch (ArgumentException e) { throw new InvalidFileException(path, $"pre_tokenizer regex does not parse: {e.Message}", e); }
                return pattern;
            }
        }
        throw new UnsupportedException($"{path}: field pre_tokenizer: found {Clip(Describe(pt), 200)}, only ByteLevel or Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)] is supported");
    }

    private static List<AddedToken> ReadAddedTokens(string path, JsonElement root, Dictionary<int, string> vocab)
    {
        var list = new List<AddedToken>();
        if (!root.TryGetProperty("added_tokens", out var at) || at.ValueKind == JsonValueKind.Null) return list;
        if (at.ValueKind != JsonValueKind.Array) throw new InvalidFileException(path, "field added_tokens: expected an array");
        var ids = new HashSet<int>();
        foreach (var a in at.EnumerateArray())
        {
            if (a.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, $"added_tokens: entry {Describe(a)} is not an object");
            int id = a.TryGetProperty("id", out var idEl) ? ReadId(path, "added_tokens[].id", idEl) : throw new InvalidFileException(path, "added_tokens: entry without \"id\"");
            if (!a.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String || c.GetString()!.Length is 0 or > MaxTokenChars)
                throw new InvalidFileException(path, $"added_tokens: token {id} has no content of 1..{MaxTokenChars} characters");
            var content = c.GetString()!;
            foreach (var flag in new[] { "lstrip", "rstrip", "single_word" })
                if (a.TryGetProperty(flag, out var fv) && fv.ValueKind == JsonValueKind.True)
                    throw new UnsupportedException($"{path}: added token {id} '{Clip(content)}' sets {flag}, which is not supported");
            bool special = a.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True;
            if (!ids.Add(id)) throw new InvalidFileException(path, $"added_tokens: id {id} appears twice");
            if (vocab.TryGetValue(id, out var existing) && existing != content)
                throw new InvalidFileException(path, $"added_tokens: id {id} '{Clip(content)}' collides with vocab token '{Clip(existing)}'");
            list.Add(new AddedToken(id, content, special));
        }
        return list;
    }

    // ---------------------------------------------------------------- tokenizer.model (tiktoken)

    /// <summary>The 256 special tokens Meta's Llama-3 code appends after the 128000 ranks, in id order.</summary>
    public static IReadOnlyList<string> MetaLlama3SpecialTokens()
    {
        var r = new List<string>
        {
            "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
            "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|reserved_special_token_4|>", "<|eot_id|>",
        };
        for (int i = 5; i < 256 - 5; i++) r.Add($"<|reserved_special_token_{i}|>");
        return r;
    }

    private static LlamaTokenizer FromTiktoken(string path, TokenizerConfig cfg)
    {
        long len = new FileInfo(path).Length;
        if (len > MaxTiktokenBytes) throw new InvalidFileException(path, $"{len} bytes, more than the limit of {MaxTiktokenBytes} for a tiktoken file");
        var data = File.ReadAllBytes(path);
        var vocab = new Dictionary<int, string>();
        var seenBytes = new HashSet<string>(StringComparer.Ordinal);
        int lineNo = 0;
        foreach (var raw in Encoding.ASCII.GetString(data).Split('\n'))
        {
            lineNo++;
            var line = raw.TrimEnd('\r');
            if (line.Length == 0) continue;
            int sp = line.IndexOf(' ');
            if (sp <= 0 || sp != line.LastIndexOf(' '))
                throw new InvalidFileException(path, $"line {lineNo}: expected 'base64 rank', found '{Clip(line)}'");
            byte[] bytes;
            try { bytes = Convert.FromBase64String(line[..sp]); }
            catch (FormatException e) { throw new InvalidFileException(path, $"line {lineNo}: '{Clip(line[..sp])}' is not base64", e); }
            if (bytes.Length is 0 or > MaxTokenChars) throw new InvalidFileException(path, $"line {lineNo}: token of {bytes.Length} bytes, expected 1..{MaxTokenChars}");
            if (!int.TryParse(line.AsSpan(sp + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int rank) || rank >= MaxVocab)
                throw new InvalidFileException(path, $"line {lineNo}: rank '{Clip(line[(sp + 1)..])}' is not an integer in [0, {MaxVocab})");
            var spelled = ByteLevel.Encode(bytes);
            if (!vocab.TryAdd(rank, spelled)) throw new InvalidFileException(path, $"line {lineNo}: rank {rank} appears twice");
            if (!seenBytes.Add(spelled)) throw new InvalidFileException(path, $"line {lineNo}: token '{Clip(line[..sp])}' appears twice");
        }
        if (vocab.Count == 0) throw new InvalidFileException(path, "no ranks found");
        for (int b = 0; b < 256; b++)
            if (!seenBytes.Contains(ByteLevel.Char((byte)b).ToString()))
                throw new InvalidFileException(path, $"no rank for the single byte 0x{b:X2}: a byte-level vocabulary needs all 256");

        int baseCount = vocab.Keys.Max() + 1;
        var added = new List<AddedToken>();
        if (cfg.AddedTokens.Count > 0)
        {
            foreach (var (id, content, special) in cfg.AddedTokens)
            {
                if (vocab.ContainsKey(id)) throw new InvalidFileException(path, $"tokenizer_config.json names added token {id} '{content}', but {id} is a rank in the tiktoken file");
                added.Add(new AddedToken(id, content, special));
            }
        }
        else
        {
            var names = MetaLlama3SpecialTokens();
            for (int i = 0; i < names.Count; i++) added.Add(new AddedToken(baseCount + i, names[i], true));
        }
        var core = TiktokenTokenizer.Create(new MemoryStream(data, writable: false),
            Llama3PreTokenizer.Instance, null, null);
        return new LlamaTokenizer(path, core, vocab, added, cfg.BosToken, cfg.EosTokens);
    }

    // ---------------------------------------------------------------- encode / decode

    /// <summary>
    /// Token ids of <paramref name="text"/>. With <paramref name="parseSpecial"/>, special tokens written in the
    /// text (e.g. "&lt;|eot_id|&gt;") become their ids; without it they are tokenized as plain text.
    /// </summary>
    public int[] Encode(string text, bool addBos = false, bool parseSpecial = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos) ids.Add(BosId ?? throw new LoRIException($"{Source}: the tokenizer has no BOS token"));
        int start = 0, i = 0;
        while (i < text.Length)
        {
            var hit = _addedByFirstChar.Count > 0 ? MatchAdded(text, i, parseSpecial) : null;
            if (hit is null) { i++; continue; }
            EncodePlain(text, start, i - start, ids);
            ids.Add(hit.Id);
            i += hit.Content.Length;
            start = i;
        }
        EncodePlain(text, start, text.Length - start, ids);
        return ids.ToArray();
    }

    private AddedToken? MatchAdded(string text, int i, bool parseSpecial)
    {
        if (!_addedByFirstChar.TryGetValue(text[i], out var candidates)) return null;
        var rest = text.AsSpan(i);
        foreach (var c in candidates)
            if ((parseSpecial || !c.Special) && rest.StartsWith(c.Content, StringComparison.Ordinal)) return c;
        return null;
    }

    private void EncodePlain(string text, int start, int length, List<int> ids)
    {
        if (length == 0) return;
        ids.AddRange(_core.EncodeToIds(text.AsSpan(start, length), considerPreTokenization: true, considerNormalization: false));
    }

    /// <summary>Text of the ids (invalid UTF-8 becomes U+FFFD). With <paramref name="skipSpecial"/>, special tokens are left out.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecial = false)
    {
        int total = 0;
        foreach (var id in ids)
            if (!(skipSpecial && IsSpecial(id))) total += TokenBytes(id).Length;
        var buf = ArrayPool<byte>.Shared.Rent(Math.Max(total, 1));
        try
        {
            int n = 0;
            foreach (var id in ids)
            {
                if (skipSpecial && _special[id]) continue;
                var b = _bytes[id]!;
                b.CopyTo(buf, n);
                n += b.Length;
            }
            return Encoding.UTF8.GetString(buf, 0, n);
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }

    /// <summary>The bytes a token stands for (UTF-8 of the content for added tokens).</summary>
    public ReadOnlySpan<byte> TokenBytes(int id)
    {
        if ((uint)id >= (uint)_bytes.Length || _bytes[id] is null)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"token id {id} is not in the vocabulary of {Source} (size {VocabSize})");
        return _bytes[id];
    }

    public bool IsSpecial(int id)
    {
        _ = TokenBytes(id);
        return _special[id];
    }

    /// <summary>The id of a token as tokenizer.json spells it ("Ġthe", "&lt;|eot_id|&gt;"), or null.</summary>
    public int? TokenToId(string token) => _ids.TryGetValue(token, out var id) ? id : null;

    /// <summary>The token as tokenizer.json spells it (byte-level characters, or an added token's content).</summary>
    public string IdToToken(int id)
    {
        _ = TokenBytes(id);
        return _tokens[id]!;
    }

    /// <summary>Bytes of the longest token.</summary>
    public int MaxTokenBytes { get; }

    public TokenStreamDecoder CreateStreamDecoder(bool skipSpecial = false) => new(this, skipSpecial);

    /// <summary>
    /// The BPE merges in priority order, each "left right" in byte-level spelling (as tokenizer.json lists them).
    /// A tiktoken vocabulary has no merge list; it is derived from the ranks: tiktoken joins any two adjacent parts
    /// whose concatenation is a token, lowest rank first, so every split of a token of rank r into two tokens is a
    /// merge of priority r (ties ordered by the ranks of the left, then the right part). This gives as many
    /// merges as HF's conversion of Llama-3 ships (280,147), in the same order.
    /// </summary>
    public IReadOnlyList<string> Merges => _merges ??= DeriveMerges();

    private List<string> DeriveMerges()
    {
        var added = AddedTokens.Select(a => a.Id).ToHashSet();
        var rank = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 0; id < _tokens.Length; id++)
            if (_tokens[id] is { } t && !added.Contains(id)) rank[t] = id;
        var merges = new List<string>();
        var splits = new List<(int L, int R, int K)>();
        foreach (var (tok, _) in rank.OrderBy(kv => kv.Value))
        {
            if (tok.Length < 2) continue;
            splits.Clear();
            for (int k = 1; k < tok.Length; k++)
                if (rank.TryGetValue(tok[..k], out int l) && rank.TryGetValue(tok[k..], out int r)) splits.Add((l, r, k));
            splits.Sort();
            foreach (var (_, _, k) in splits) merges.Add(tok[..k] + " " + tok[k..]);
        }
        return merges;
    }

    private static int ReadId(string path, string what, JsonElement v)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int id) || id < 0 || id >= MaxVocab)
            throw new InvalidFileException(path, $"{what}: found {Clip(v.GetRawText())}, expected a token id in [0, {MaxVocab})");
        return id;
    }

    private static string Describe(JsonElement e) => Clip(e.GetRawText(), 80);

    private static string Clip(string s, int max = 40) => s.Length <= max ? s : s[..max] + "...";

    // ---------------------------------------------------------------- tokenizer_config.json

    private sealed record TokenizerConfig(string? BosToken, IReadOnlyList<string> EosTokens, IReadOnlyList<(int Id, string Content, bool Special)> AddedTokens)
    {
        public static TokenizerConfig Read(string path)
        {
            if (!File.Exists(path)) return new TokenizerConfig(null, [], []);
            using var doc = JsonFile.Read(path, MaxConfigBytes, "tokenizer_config.json");
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidFileException(path, $"expected a JSON object, found {root.ValueKind}");
            string? bos = TokenName(path, root, "bos_token");
            var eos = new List<string>();
            if (TokenName(path, root, "eos_token") is { } e) eos.Add(e);
            var added = new List<(int, string, bool)>();
            if (root.TryGetProperty("added_tokens_decoder", out var atd) && atd.ValueKind == JsonValueKind.Object)
            {
                foreach (var p in atd.EnumerateObject())
                {
                    if (!int.TryParse(p.Name, NumberStyles.None, CultureInfo.InvariantCulture, out int id) || id >= MaxVocab)
                        throw new InvalidFileException(path, $"added_tokens_decoder: key '{Clip(p.Name)}' is not a token id in [0, {MaxVocab})");
                    if (p.Value.ValueKind != JsonValueKind.Object || !p.Value.TryGetProperty("content", out var c)
                        || c.ValueKind != JsonValueKind.String || c.GetString()!.Length is 0 or > MaxTokenChars)
                        throw new InvalidFileException(path, $"added_tokens_decoder['{id}']: missing content of 1..{MaxTokenChars} characters");
                    bool special = p.Value.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                    added.Add((id, c.GetString()!, special));
                }
            }
            return new TokenizerConfig(bos, eos, added);
        }

        private static string? TokenName(string path, JsonElement root, string field)
        {
            if (!root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind == JsonValueKind.String) return v.GetString();
            if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String)
                return c.GetString();
            throw new InvalidFileException(path, $"field {field}: found {Describe(v)}, expected a token string or {{\"content\": ...}}");
        }
    }
}

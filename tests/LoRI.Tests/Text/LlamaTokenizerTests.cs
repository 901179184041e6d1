using System.Text;
using System.Text.Json;
using LoRI.Tests.IO;
using LoRI.Text;

namespace LoRI.Tests.Text;

public class LlamaTokenizerTests
{
    private static readonly Lazy<LlamaTokenizer?> JsonRoute = new(() =>
        Fixtures.Find("llama3-tokenizer") is { } d ? LlamaTokenizer.Load(d) : null);

    private static LlamaTokenizer Tok()
    {
        var dir = Fixtures.Require("llama3-tokenizer");
        return JsonRoute.Value ?? LlamaTokenizer.Load(dir);
    }

    private static List<(string Text, int[] Ids)> Cases()
    {
        var dir = Fixtures.Require("llama3-tokenizer");
        var r = new List<(string, int[])>();
        foreach (var line in File.ReadLines(Path.Combine(dir, "cases.jsonl")))
        {
            if (line.Length == 0) continue;
            using var doc = JsonDocument.Parse(line);
            r.Add((doc.RootElement.GetProperty("text").GetString()!,
                doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray()));
        }
        return r;
    }

    private static void AssertMatchesCases(LlamaTokenizer tok)
    {
        var cases = Cases();
        Assert.That(cases, Has.Count.GreaterThan(100));
        var failures = new List<string>();
        foreach (var (text, ids) in cases)
        {
            var got = tok.Encode(text);
            if (!got.AsSpan().SequenceEqual(ids))
                failures.Add($"{JsonSerializer.Serialize(text)}: expected [{string.Join(",", ids)}] got [{string.Join(",", got)}]");
        }
        Assert.That(failures, Is.Empty, $"{failures.Count} of {cases.Count} cases differ from Hugging Face");
    }

    [Test]
    public void TokenizerJson_MatchesHuggingFaceOnEveryFixtureCase() => AssertMatchesCases(Tok());

    [Test]
    public void TokenizerModel_GivesTheSameIdsAsTokenizerJson()
    {
        var fixture = Fixtures.Require("llama3-tokenizer");
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("original"));
        // Meta's tokenizer.model from the fixture's vocab: each byte-level spelled token mapped back to its
        // bytes through the inverse GPT-2 table, written as `base64 rank`.
        using (var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(fixture, "tokenizer.json"))))
        using (var w = new StreamWriter(dir.File("original/tokenizer.model"), false, new UTF8Encoding(false)))
        {
            w.NewLine = "\n";
            foreach (var p in doc.RootElement.GetProperty("model").GetProperty("vocab").EnumerateObject().OrderBy(p => p.Value.GetInt32()))
            {
                var bytes = p.Name.Select(c => (byte)ByteLevel.Byte(c)).ToArray();
                w.WriteLine($"{Convert.ToBase64String(bytes)} {p.Value.GetInt32()}");
            }
        }
        var tiktoken = LlamaTokenizer.Load(dir.Path);
        Assert.That(tiktoken.Source, Does.EndWith("tokenizer.model"));
        Assert.That(tiktoken.VocabSize, Is.EqualTo(128256));
        var json = Tok();
        for (int id = 127990; id < 128256; id++)
            Assert.That(tiktoken.IdToToken(id), Is.EqualTo(json.IdToToken(id)), $"special token {id} is named as Meta names it");
        AssertMatchesCases(tiktoken);
        foreach (var (text, _) in Cases().Take(50))
            Assert.That(tiktoken.Encode(text, parseSpecial: false), Is.EqualTo(json.Encode(text, parseSpecial: false)), text);
    }

    [Test]
    public void Vocabulary_AndSpecialTokens()
    {
        var t = Tok();
        Assert.That(t.VocabSize, Is.EqualTo(128256));
        Assert.That(t.BosId, Is.EqualTo(128000));
        Assert.That(t.EosIds, Is.EqualTo(new[] { 128001, 128009 }), "tokenizer_config's eos_token first, then <|eot_id|>");
        Assert.That(t.TokenToId("<|eot_id|>"), Is.EqualTo(128009));
        Assert.That(t.TokenToId("Ġworld"), Is.EqualTo(1917));
        Assert.That(t.TokenToId("no such token"), Is.Null);
        Assert.That(t.IdToToken(9906), Is.EqualTo("Hello"));
        Assert.That(t.IdToToken(128006), Is.EqualTo("<|start_header_id|>"));
        Assert.That(t.IsSpecial(128006), Is.True);
        Assert.That(t.IsSpecial(9906), Is.False);
        Assert.Throws<ArgumentOutOfRangeException>(() => t.IdToToken(128256));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([-1]));
    }

    [Test]
    public void Encode_SpecialTokensInText()
    {
        var t = Tok();
        Assert.That(t.Encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"),
            Is.EqualTo(new[] { 128000, 128006, 882, 128007, 271, 13347, 0, 128009 }));
        Assert.That(t.Encode("Hello world!", addBos: true), Is.EqualTo(new[] { 128000, 9906, 1917, 0 }));

        // Not parsed: the same characters as plain text ("<|notatoken|>" in the fixture shows how '<|' and '|>' split).
        var plain = t.Encode("a<|eot_id|>b", parseSpecial: false);
        Assert.That(plain, Does.Not.Contain(128009));
        Assert.That(plain.Length, Is.GreaterThan(3));
        Assert.That(t.Decode(plain), Is.EqualTo("a<|eot_id|>b"));
        Assert.That(t.Encode("a<|eot_id|>b"), Is.EqualTo(new[] { t.Encode("a")[0], 128009, t.Encode("b")[0] }));
    }

    [Test]
    public void Decode_InvertsEncode_OnEveryCase_AndSkipsSpecials()
    {
        var t = Tok();
        foreach (var (text, ids) in Cases())
            Assert.That(t.Decode(ids), Is.EqualTo(text));
        Assert.That(t.Decode([128000, 9906, 1917, 0, 128009], skipSpecial: true), Is.EqualTo("Hello world!"));
        Assert.That(t.Decode([128000, 9906, 128009]), Is.EqualTo("<|begin_of_text|>Hello<|eot_id|>"));
    }

    [Test]
    public void Decode_InvalidUtf8_BecomesReplacementCharacter()
    {
        var t = Tok();
        // 9468 is the two bytes F0 9F, the start of a 4-byte emoji; alone it is not valid UTF-8.
        Assert.That(t.TokenBytes(9468).ToArray(), Is.EqualTo(new byte[] { 0xF0, 0x9F }));
        Assert.That(t.Decode([9468, 9906]), Is.EqualTo("\uFFFDHello"));
    }

    [Test]
    public void StreamDecoder_HoldsBackSplitMultiByteCharacters()
    {
        var t = Tok();
        // From the fixture: the thumbs-up with skin tone is 6 tokens whose boundaries fall inside characters.
        const string text = "👍🏽 ok";
        var ids = t.Encode(text);
        Assert.That(ids.Take(6), Is.EqualTo(new[] { 9468, 239, 235, 9468, 237, 121 }));
        var d = t.CreateStreamDecoder();
        var pieces = ids.Select(d.Push).ToList();
        pieces.Add(d.Flush());
        Assert.That(pieces[0], Is.Empty, "F0 9F is an unfinished character");
        Assert.That(string.Concat(pieces), Is.EqualTo(text));
        Assert.That(pieces, Has.None.Contain("\uFFFD"));
        Assert.That(pieces.Where(p => p.Length > 0).Take(2), Is.EqualTo(new[] { "👍", "🏽" }));
    }

    [Test]
    public void StreamDecoder_ConcatenationEqualsDecode_ForRandomIds()
    {
        var t = Tok();
        var rng = new Random(7);
        for (int trial = 0; trial < 200; trial++)
        {
            // Mostly short tokens, many of them partial UTF-8 sequences.
            var ids = Enumerable.Range(0, rng.Next(1, 30)).Select(_ => rng.Next(0, rng.Next(2) == 0 ? 256 : 128256)).ToArray();
            var d = t.CreateStreamDecoder();
            var sb = new StringBuilder();
            foreach (var id in ids) sb.Append(d.Push(id));
            sb.Append(d.Flush());
            Assert.That(sb.ToString(), Is.EqualTo(t.Decode(ids)), $"ids [{string.Join(",", ids)}]");
            Assert.That(d.PendingBytes, Is.EqualTo(0));
        }
    }

    [Test]
    public void StreamDecoder_SpanPush_MatchesStringPush()
    {
        var t = Tok();
        var ids = t.Encode("héllo 👍🏽 中文 <|eot_id|> ok");
        var a = t.CreateStreamDecoder(skipSpecial: true);
        var b = t.CreateStreamDecoder(skipSpecial: true);
        var buf = new char[b.MaxCharsPerPush];
        Assert.That(b.MaxCharsPerPush, Is.GreaterThanOrEqualTo(t.MaxTokenBytes + 3));
        foreach (var id in ids)
        {
            int n = b.Push(id, buf);
            Assert.That(new string(buf, 0, n), Is.EqualTo(a.Push(id)), $"token {id}");
        }
        Assert.That(a.Flush() + b.Flush(), Is.Empty);
    }

    [Test]
    public void ChatTemplate_IsExactlyTheFixtureTemplate()
    {
        var fixture = Fixtures.Require("llama3-tokenizer");
        using (var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(fixture, "tokenizer_config.json"))))
        {
            // The template these strings were derived from; fail loudly if the fixture ever changes.
            Assert.That(doc.RootElement.GetProperty("chat_template").GetString(), Is.EqualTo(
                "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"));
        }
        var s = ChatTemplate.Llama3([("system", "  Be brief.\n"), ("user", "Hi!"), ("assistant", "Hello.\x1f"), ("user", "\tWhy?  ")], addGenerationPrompt: true);
        Assert.That(s, Is.EqualTo(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n"));
        Assert.That(ChatTemplate.Llama3([("user", "Hi!")], addGenerationPrompt: false),
            Is.EqualTo("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"));
        Assert.That(Tok().Encode(ChatTemplate.Llama3([("user", "Hi!")], false)),
            Is.EqualTo(new[] { 128000, 128006, 882, 128007, 271, 13347, 0, 128009 }));
    }
}

using System.Text;
using System.Text.Json;
using LoRI.Tests.IO;
using LoRI.Text;

namespace LoRI.Tests.Text;

public class TokenizerFilesTests
{
    private static readonly string[] Corpus =
    [
        "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.",
        "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
        "Llama models read tokens. Tokens are bytes merged by frequency. The the the.",
    ];

    [Test]
    public void BytesOnly_LayoutAndIds()
    {
        using var dir = new TempDir();
        var v = TokenizerFiles.WriteByteLevel(dir.Path);
        Assert.That(v.VocabSize, Is.EqualTo(256 + 6));
        Assert.That((v.BosId, v.EosId, v.StartHeaderId, v.EndHeaderId, v.EotId, v.PadId), Is.EqualTo((256, 257, 258, 259, 260, 261)));
        var t = LlamaTokenizer.Load(dir.Path);
        Assert.That(t.VocabSize, Is.EqualTo(v.VocabSize));
        Assert.That(t.BosId, Is.EqualTo(v.BosId));
        Assert.That(t.EosIds, Is.EqualTo(new[] { v.EosId, v.EotId }));
        // Without merges every byte is its own token, and the id is the byte value.
        var text = "Aé\n\0";
        Assert.That(t.Encode(text), Is.EqualTo(Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray()));
        Assert.That(t.Encode("x<|eot_id|>", addBos: true), Is.EqualTo(new[] { v.BosId, 'x', v.EotId }));
        Assert.That(t.IdToToken(32), Is.EqualTo("Ġ"));
        Assert.That(t.IdToToken(10), Is.EqualTo("Ċ"));
        Assert.That(t.IsSpecial(v.PadId), Is.True);
    }

    [Test]
    public void Merges_LearnedAsHandComputed()
    {
        // Pieces "abab" and " abab": pair (a,b) occurs 4 times -> "ab" (256); then (ab,ab) twice -> "abab" (257);
        // then (" ", abab) occurs once, fewer than two: stop.
        using var dir = new TempDir();
        var v = TokenizerFiles.WriteByteLevel(dir.Path, ["abab abab"], maxMerges: 10);
        Assert.That(v.MergeCount, Is.EqualTo(2));
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir.Path, "tokenizer.json")));
        var model = doc.RootElement.GetProperty("model");
        Assert.That(model.GetProperty("merges").EnumerateArray().Select(m => m.GetString()), Is.EqualTo(new[] { "a b", "ab ab" }));
        Assert.That(model.GetProperty("vocab").GetProperty("abab").GetInt32(), Is.EqualTo(257));
        var t = LlamaTokenizer.Load(dir.Path);
        Assert.That(t.Encode("abab abab"), Is.EqualTo(new[] { 257, 32, 257 }));
        Assert.That(t.Encode("ababab"), Is.EqualTo(new[] { 257, 256 }));
    }

    [Test]
    public void WithMerges_RoundTripsAnyUtf8_AndIsDeterministic()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        var va = TokenizerFiles.WriteByteLevel(a.Path, Corpus, maxMerges: 300);
        TokenizerFiles.WriteByteLevel(b.Path, Corpus, maxMerges: 300);
        Assert.That(File.ReadAllBytes(Path.Combine(a.Path, "tokenizer.json")), Is.EqualTo(File.ReadAllBytes(Path.Combine(b.Path, "tokenizer.json"))));
        Assert.That(va.MergeCount, Is.GreaterThan(20).And.LessThanOrEqualTo(300));
        Assert.That(va.VocabSize, Is.EqualTo(256 + va.MergeCount + 6));

        var t = LlamaTokenizer.Load(a.Path);
        Assert.That(t.VocabSize, Is.EqualTo(va.VocabSize));
        var the = t.Encode("The quick brown fox");
        Assert.That(the.Length, Is.LessThan("The quick brown fox".Length), "merges shorten familiar text");

        var rng = new Random(11);
        var samples = new List<string> { "", " ", "\r\n\t", "👨‍👩‍👧 中文 Ελλάδα", "<|eot_id|><|begin_of_text|>", "\uFEFF\u200B\0" };
        for (int i = 0; i < 300; i++)
        {
            var sb = new StringBuilder();
            int n = rng.Next(0, 40);
            for (int k = 0; k < n; k++)
            {
                int cp = rng.Next(4) switch
                {
                    0 => rng.Next(0, 128),
                    1 => rng.Next(0x80, 0x800),
                    2 => rng.Next(0x800, 0xD800),
                    _ => rng.Next(0x10000, 0x110000),
                };
                sb.Append(char.ConvertFromUtf32(cp));
            }
            samples.Add(sb.ToString());
        }
        foreach (var s in samples)
        {
            var ids = t.Encode(s, parseSpecial: false);
            Assert.That(ids, Has.All.LessThan(256 + va.MergeCount), "plain text never yields a special id");
            Assert.That(t.Decode(ids), Is.EqualTo(s));
            Assert.That(t.Decode(t.Encode(s)), Is.EqualTo(s));
        }
    }

    [Test]
    public void TokenizerConfig_NamesBosEosPad()
    {
        using var dir = new TempDir();
        TokenizerFiles.WriteByteLevel(dir.Path);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir.Path, "tokenizer_config.json")));
        var r = doc.RootElement;
        Assert.That(r.GetProperty("bos_token").GetString(), Is.EqualTo("<|begin_of_text|>"));
        Assert.That(r.GetProperty("eos_token").GetString(), Is.EqualTo("<|end_of_text|>"));
        Assert.That(r.GetProperty("pad_token").GetString(), Is.EqualTo("<|finetune_right_pad_id|>"));
        Assert.That(r.GetProperty("added_tokens_decoder").GetProperty("260").GetProperty("content").GetString(), Is.EqualTo("<|eot_id|>"));
        Assert.That(File.Exists(Path.Combine(dir.Path, "tokenizer.json.tmp")), Is.False);
    }

    [Test]
    public void TiktokenRoute_TakesSpecialNamesFromTokenizerConfig()
    {
        using var dir = new TempDir();
        var v = TokenizerFiles.WriteByteLevel(dir.Path, ["abab abab"], maxMerges: 10);
        var json = LlamaTokenizer.Load(dir.Path);
        // Replace tokenizer.json by Meta-style ranks; tokenizer_config.json stays and names the specials.
        using (var w = new StreamWriter(Path.Combine(dir.Path, "tokenizer.model")) { NewLine = "\n" })
            for (int id = 0; id < 256 + v.MergeCount; id++)
                w.WriteLine($"{Convert.ToBase64String(json.TokenBytes(id))} {id}");
        File.Delete(Path.Combine(dir.Path, "tokenizer.json"));
        var tik = LlamaTokenizer.Load(dir.Path);
        Assert.That(tik.Source, Does.EndWith("tokenizer.model"));
        Assert.That(tik.VocabSize, Is.EqualTo(v.VocabSize));
        Assert.That(tik.TokenToId("<|finetune_right_pad_id|>"), Is.EqualTo(v.PadId));
        Assert.That((tik.BosId, tik.EosIds), Is.EqualTo((json.BosId, json.EosIds)));
        foreach (var s in new[] { "abab abab", "ababab<|eot_id|>x", "é 😀 \n\n" })
            Assert.That(tik.Encode(s), Is.EqualTo(json.Encode(s)), s);
    }
}

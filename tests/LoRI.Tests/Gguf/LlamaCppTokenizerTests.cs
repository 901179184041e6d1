using System.Text;
using System.Text.Json;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tests.IO;
using LoRI.Tests.Text;
using LoRI.Text;

namespace LoRI.Tests.Gguf;

/// <summary>
/// The tokenizer we export, read by llama.cpp: with the real Llama-3 vocabulary (a model of tiny weights around it),
/// llama.cpp must tokenize the fixture strings exactly as Hugging Face did (the fixture's ids) and as we do.
/// </summary>
[TestFixture, Category("LlamaCpp")]
public class LlamaCppTokenizerTests
{
    private static string WriteRealVocabModel(TempDir tmp)
    {
        var fixture = Fixtures.Require("llama3-tokenizer");
        var dir = tmp.File("llama3-vocab");
        Directory.CreateDirectory(dir);
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(fixture, f), Path.Combine(dir, f));
        var c = new LlamaConfig
        {
            HiddenSize = 8, IntermediateSize = 8, NumLayers = 1, NumHeads = 1, NumKvHeads = 1, HeadDim = 8,
            VocabSize = 128256, MaxPositionEmbeddings = 64, TieWordEmbeddings = true, TorchDtype = "float32",
            BosTokenId = 128000, EosTokenIds = [128001, 128009],
        };
        LlamaModel.Save(dir, c, RandomWeights.Create(c, 3, LoRI.Tensors.DType.F32));
        return dir;
    }

    private static List<(string Text, int[] Ids)> Cases()
    {
        var r = new List<(string, int[])>();
        foreach (var line in File.ReadLines(Path.Combine(Fixtures.Require("llama3-tokenizer"), "cases.jsonl")))
        {
            if (line.Length == 0) continue;
            using var doc = JsonDocument.Parse(line);
            r.Add((doc.RootElement.GetProperty("text").GetString()!,
                doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray()));
        }
        return r;
    }

    [Test]
    public void LlamaCpp_TokenizesFixtureStringsLikeHuggingFaceAndUs()
    {
        using var tmp = new TempDir();
        var dir = WriteRealVocabModel(tmp);
        var gguf = tmp.File("vocab.gguf");
        GgufExport.WriteModel(dir, gguf);
        var ours = LlamaTokenizer.Load(dir);
        var tokenize = LlamaCppPeer.Tokenizer(gguf, out var owner);
        using (owner)
        {
            var cases = Cases();
            Assert.That(cases, Has.Count.GreaterThan(100));
            var failures = new List<string>();
            foreach (var (text, ids) in cases)
            {
                var cpp = tokenize(text, false, true);
                var us = ours.Encode(text);
                if (!cpp.SequenceEqual(ids) || !us.SequenceEqual(ids))
                    failures.Add($"'{text}': HF [{string.Join(",", ids)}], llama.cpp [{string.Join(",", cpp)}], ours [{string.Join(",", us)}]");
            }
            Assert.That(failures, Is.Empty, $"{failures.Count} of {cases.Count} strings differ");
            // BOS as llama.cpp adds it, and a special token written in the text
            Assert.That(tokenize("Hi", true, true), Is.EqualTo(ours.Encode("Hi", addBos: true)));
            var chat = "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>";
            Assert.That(tokenize(chat, false, true), Is.EqualTo(ours.Encode(chat)));
            Assert.That(tokenize(chat, false, true), Does.Contain(128009));
        }
    }

    [Test]
    public void DerivedMerges_FromTiktokenRanks_EqualTokenizerJsonMerges()
    {
        // Meta's tokenizer.model carries ranks and no merges; the merges the export writes for it are derived
        // from the ranks. For Llama-3 they must be the list Hugging Face ships in tokenizer.json.
        var fixture = Fixtures.Require("llama3-tokenizer");
        var json = LlamaTokenizer.Load(fixture);
        using var tmp = new TempDir();
        Directory.CreateDirectory(tmp.File("original"));
        using (var w = new StreamWriter(tmp.File("original/tokenizer.model"), false, new UTF8Encoding(false)))
            for (int id = 0; id < 128000; id++)
                w.Write($"{Convert.ToBase64String(json.TokenBytes(id))} {id}\n");
        var tiktoken = LlamaTokenizer.Load(tmp.Path);
        var derived = tiktoken.Merges;
        var shipped = json.Merges;
        Assert.That(derived.Count, Is.EqualTo(shipped.Count));
        for (int i = 0; i < shipped.Count; i++)
            if (derived[i] != shipped[i]) Assert.Fail($"merge {i}: derived '{derived[i]}', tokenizer.json '{shipped[i]}'");
    }

    [Test]
    public void LlamaCpp_TokenizesWithOurSmallByteLevelTokenizers()
    {
        // init-model's tokenizers (bytes + learned merges + Llama-3 specials) go to GGUF the same way; llama.cpp must
        // split text as we do, merges included.
        var texts = Cases().Select(c => c.Text).ToList();
        using var tmp = new TempDir();
        var dir = tmp.File("m");
        var vocab = TokenizerFiles.WriteByteLevel(dir, texts, maxMerges: 300);
        Assert.That(vocab.MergeCount, Is.GreaterThan(100));
        var c = new LlamaConfig
        {
            HiddenSize = 8, IntermediateSize = 8, NumLayers = 1, NumHeads = 1, NumKvHeads = 1, HeadDim = 8,
            VocabSize = vocab.VocabSize, MaxPositionEmbeddings = 64, TieWordEmbeddings = true, TorchDtype = "float32",
            BosTokenId = vocab.BosId, EosTokenIds = vocab.EosIds,
        };
        LlamaModel.Save(dir, c, RandomWeights.Create(c, 3, LoRI.Tensors.DType.F32));
        var gguf = tmp.File("m.gguf");
        GgufExport.WriteModel(dir, gguf);
        var ours = LlamaTokenizer.Load(dir);
        var tokenize = LlamaCppPeer.Tokenizer(gguf, out var owner);
        using (owner)
        {
            var failures = new List<string>();
            foreach (var text in texts)
            {
                var cpp = tokenize(text, false, true);
                var us = ours.Encode(text);
                if (!cpp.SequenceEqual(us)) failures.Add($"'{text}': llama.cpp [{string.Join(",", cpp)}], ours [{string.Join(",", us)}]");
            }
            Assert.That(failures, Is.Empty, $"{failures.Count} of {texts.Count} strings differ");
        }
    }
}

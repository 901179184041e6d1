using System.Text.Json.Nodes;
using LoRI.Tests.IO;
using LoRI.Text;

namespace LoRI.Tests.Text;

public class TokenizerValidationTests
{
    private static string Mutated(TempDir dir, Action<JsonObject> change)
    {
        TokenizerFiles.WriteByteLevel(dir.Path, ["abab abab"], maxMerges: 4);
        var path = Path.Combine(dir.Path, "tokenizer.json");
        var o = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        change(o);
        File.WriteAllText(path, o.ToJsonString());
        return dir.Path;
    }

    private static readonly object[] BadJson =
    [
        new object[] { (Action<JsonObject>)(o => o["model"]!["vocab"]!.AsObject().Remove("Ġ")), "model.vocab lacks the token for byte 0x20" },
        new object[] { (Action<JsonObject>)(o => o["model"]!["vocab"]!["zz"] = 3), "model.vocab: id 3 is given to both" },
        new object[] { (Action<JsonObject>)(o => o["model"]!["vocab"]!["q"] = -1), "model.vocab['q']: found -1, expected a token id" },
        new object[] { (Action<JsonObject>)(o => o["model"]!["merges"]!.AsArray().Add("a zz")), "model.merges[2] = 'a zz' uses a token missing from model.vocab" },
        new object[] { (Action<JsonObject>)(o => o["model"]!["merges"]!.AsArray().Add("ab")), "model.merges[2] = 'ab' is not two tokens separated by one space" },
        new object[] { (Action<JsonObject>)(o => o["added_tokens"]![0]!["id"] = 5), "added_tokens: id 5 '<|begin_of_text|>' collides with vocab token" },
        new object[] { (Action<JsonObject>)(o => o["model"] = null), "missing object field \"model\"" },
    ];

    [TestCaseSource(nameof(BadJson))]
    public void TokenizerJson_Rejected_WithMessage(Action<JsonObject> change, string expected)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<InvalidFileException>(() => LlamaTokenizer.Load(Mutated(dir, change)))!;
        Assert.That(e.Message, Does.Contain("tokenizer.json").And.Contain(expected));
    }

    private static readonly object[] UnsupportedJson =
    [
        new object[] { (Action<JsonObject>)(o => o["normalizer"] = new JsonObject { ["type"] = "NFC" }), "field normalizer" },
        new object[] { (Action<JsonObject>)(o => o["model"]!["type"] = "WordPiece"), "field model.type: found WordPiece" },
        new object[] { (Action<JsonObject>)(o => o["model"]!["vocab"]!["▁x"] = 999), "is not spelled in GPT-2 byte-level characters" },
        new object[] { (Action<JsonObject>)(o => o["added_tokens"]![0]!["lstrip"] = true), "sets lstrip" },
        new object[] { (Action<JsonObject>)(o => o["pre_tokenizer"] = new JsonObject { ["type"] = "Whitespace" }), "field pre_tokenizer" },
    ];

    [TestCaseSource(nameof(UnsupportedJson))]
    public void TokenizerJson_Unsupported_WithMessage(Action<JsonObject> change, string expected)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<UnsupportedException>(() => LlamaTokenizer.Load(Mutated(dir, change)))!;
        Assert.That(e.Message, Does.Contain("tokenizer.json").And.Contain(expected));
    }

    [TestCase("QQ== 0\nnot-base64! 1\n", "line 2: 'not-base64!' is not base64")]
    [TestCase("QQ== 0\nQg== x\n", "line 2: rank 'x' is not an integer")]
    [TestCase("QQ== 0\nQg== 0\n", "line 2: rank 0 appears twice")]
    [TestCase("QQ== 0\nQQ== 1\n", "line 2: token 'QQ==' appears twice")]
    [TestCase("QQ==0\n", "line 1: expected 'base64 rank'")]
    [TestCase("QQ== 0\n", "no rank for the single byte 0x00")]
    public void TokenizerModel_Rejected_WithMessage(string content, string expected)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.model"), content);
        var e = Assert.Throws<InvalidFileException>(() => LlamaTokenizer.Load(dir.Path))!;
        Assert.That(e.Message, Does.Contain("tokenizer.model").And.Contain(expected));
    }

    [Test]
    public void EmptyFolder_SaysWhatItExpected()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<InvalidFileException>(() => LlamaTokenizer.Load(dir.Path))!;
        Assert.That(e.Message, Does.Contain("expected tokenizer.json or original/tokenizer.model"));
    }
}

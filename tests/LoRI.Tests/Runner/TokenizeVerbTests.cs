using System.Text.Json;
using LoRI.Tests.IO;
using LoRI.Tests.Text;
using LoRI.Text;

namespace LoRI.Tests.Runner;

public class TokenizeVerbTests
{
    private static int[] Ids(string json) => JsonSerializer.Deserialize<int[]>(json)!;

    [Test]
    public void Text_PrintsHuggingFaceIds_WithAndWithoutBos()
    {
        var fixture = Fixtures.Require("llama3-tokenizer");
        var (exit, stdout, stderr) = CliRunner.Run("tokenize", "--model", fixture, "--text", "Hello world!");
        Assert.That(exit, Is.EqualTo(0), stderr);
        Assert.That(stdout, Is.EqualTo("[9906,1917,0]\n"));
        (exit, stdout, _) = CliRunner.Run("tokenize", "--model", fixture, "--text", "Hello world!", "--bos");
        Assert.That(stdout, Is.EqualTo("[128000,9906,1917,0]\n"));
        (exit, stdout, _) = CliRunner.Run("tokenize", "--model", fixture, "--text", "Hi!", "--chat");
        Assert.That(stdout, Is.EqualTo("[128000,128006,882,128007,271,13347,0,128009,128006,78191,128007,271]\n"));
    }

    [Test]
    public void Jsonl_OneArrayPerLine_ChatMessagesToo()
    {
        using var dir = new TempDir();
        var v = TokenizerFiles.WriteByteLevel(dir.Path);
        var file = dir.File("data.jsonl");
        File.WriteAllText(file, "{\"text\": \"ab\"}\n\n{\"text\": \"\\u00e9\", \"other\": 1}\n");
        var (exit, stdout, stderr) = CliRunner.Run("tokenize", "--model", dir.Path, "--jsonl", file, "--bos");
        Assert.That(exit, Is.EqualTo(0), stderr);
        Assert.That(stdout, Is.EqualTo($"[{v.BosId},97,98]\n[{v.BosId},195,169]\n"));

        File.WriteAllText(file, "{\"messages\": [{\"role\": \"user\", \"content\": \" x \"}]}\n{\"text\": \"y\"}\n");
        (exit, stdout, stderr) = CliRunner.Run("tokenize", "--model", dir.Path, "--jsonl", file, "--chat");
        Assert.That(exit, Is.EqualTo(0), stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var tok = LlamaTokenizer.Load(dir.Path);
        Assert.That(Ids(lines[0]), Is.EqualTo(new[]
        {
            v.BosId, v.StartHeaderId, 'u', 's', 'e', 'r', v.EndHeaderId, '\n', '\n', 'x', v.EotId,
            v.StartHeaderId, 'a', 's', 's', 'i', 's', 't', 'a', 'n', 't', v.EndHeaderId, '\n', '\n',
        }));
        Assert.That(Ids(lines[1]), Is.EqualTo(tok.Encode(ChatTemplate.Llama3([("user", "y")], true))));
    }

    [TestCase("{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"txt\": \"c\"}\n", "line 3: missing string field \"text\"")]
    [TestCase("{\"text\": \"a\"}\nnot json\n", "line 2: not valid JSON")]
    [TestCase("[1, 2]\n", "line 1: expected a JSON object")]
    public void Jsonl_BadLine_NamesTheLineNumber(string content, string expected)
    {
        using var dir = new TempDir();
        TokenizerFiles.WriteByteLevel(dir.Path);
        var file = dir.File("bad.jsonl");
        File.WriteAllText(file, content);
        var (exit, _, stderr) = CliRunner.Run("tokenize", "--model", dir.Path, "--jsonl", file);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("bad.jsonl").And.Contain(expected));
    }

    [TestCase(new string[0], "give exactly one of --text or --jsonl")]
    [TestCase(new[] { "--text", "a", "--jsonl", "f" }, "give exactly one of --text or --jsonl")]
    [TestCase(new[] { "--text", "a", "--chat", "--bos" }, "--bos with --chat")]
    public void Usage_Errors_Exit2(string[] extra, string expected)
    {
        using var dir = new TempDir();
        TokenizerFiles.WriteByteLevel(dir.Path);
        var (exit, _, stderr) = CliRunner.Run(["tokenize", "--model", dir.Path, .. extra]);
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(stderr, Does.Contain(expected).And.Contain("usage: lori tokenize"));
    }
}

using System.Text.RegularExpressions;
using LoRI.Text;

namespace LoRI.Tests.Text;

/// <summary>
/// The pre-tokenizer must read code points, as Oniguruma (HF) and Rust's regex (tiktoken) do. Expected pieces
/// are worked out by hand from the Llama-3 pattern applied to code points.
/// </summary>
public class PreTokenizerRegexTests
{
    private static string[] Split(string pattern, string text) =>
        PreTokenizerRegex.Create(pattern, compiled: false).Matches(text).Select(m => m.Value).ToArray();

    private static string[] Llama3(string text) => Split(LlamaTokenizer.Llama3Pattern, text);

    // 𝐀 U+1D400 MATHEMATICAL BOLD CAPITAL A (Lu); 𠀀 U+20000 CJK extension B (Lo); 𝟎𝟏𝟐𝟑 U+1D7CE.. (Nd); 😀 (So).
    [TestCase("a𝐀b c", new[] { "a𝐀b", " c" })]
    [TestCase("!!𝐀", new[] { "!!", "𝐀" })]
    [TestCase("!𝐀", new[] { "!𝐀" })]
    [TestCase("x𠀀y 𠀀", new[] { "x𠀀y", " 𠀀" })]
    [TestCase("𝟎𝟏𝟐𝟑", new[] { "𝟎𝟏𝟐", "𝟑" })]
    [TestCase("1𝟎23", new[] { "1𝟎2", "3" })]
    [TestCase(" 😀😀!a", new[] { " 😀😀!", "a" })]
    [TestCase("😀a", new[] { "😀a" })]
    public void Llama3_ReadsSurrogatePairsAsCodePoints(string text, string[] expected) =>
        Assert.That(Llama3(text), Is.EqualTo(expected));

    [Test]
    public void Llama3_LoneSurrogateIsOneOtherCharacter()
    {
        // Kept out of [TestCase]: attribute strings are stored as UTF-8, which cannot hold a lone surrogate.
        Assert.That(Llama3("a\uD800b"), Is.EqualTo(new[] { "a", "\uD800b" }));
        Assert.That(Llama3("!\uDC00\uDC00x"), Is.EqualTo(new[] { "!\uDC00\uDC00", "x" }));
    }

    [Test]
    public void Llama3_UnchangedOnBmpText()
    {
        var plain = new Regex(LlamaTokenizer.Llama3Pattern, RegexOptions.CultureInvariant);
        var rng = new Random(3);
        const string alphabet = "aZé \t\n\r'sSdll1234567890!?.,-_()[]{}ßПр中文\u00A0\u3000\u200B";
        for (int i = 0; i < 500; i++)
        {
            var text = new string(Enumerable.Range(0, rng.Next(0, 30)).Select(_ => alphabet[rng.Next(alphabet.Length)]).ToArray());
            Assert.That(Llama3(text), Is.EqualTo(plain.Matches(text).Select(m => m.Value).ToArray()), text);
        }
    }

    [TestCase("a𝐀b 𝟎𝟏!", new[] { "a𝐀b", " 𝟎𝟏", "!" })]
    public void Gpt2_ReadsSurrogatePairsAsCodePoints(string text, string[] expected) =>
        Assert.That(Split(LlamaTokenizer.Gpt2Pattern, text), Is.EqualTo(expected));

    [Test]
    public void Tokenizer_KeepsSupplementaryLettersInOnePiece()
    {
        using var dir = new LoRI.Tests.IO.TempDir();
        // Merges learned from a corpus where "a𝐀" is frequent give it one token, which only a piece holding
        // both code points can use.
        TokenizerFiles.WriteByteLevel(dir.Path, [string.Concat(Enumerable.Repeat("a𝐀 ", 20))], maxMerges: 20);
        var t = LlamaTokenizer.Load(dir.Path);
        var ids = t.Encode("a𝐀");
        Assert.That(ids, Has.Length.EqualTo(1), string.Join(",", ids.Select(t.IdToToken)));
        Assert.That(t.Decode(ids), Is.EqualTo("a𝐀"));
    }
}

/// <summary>The hand-written Llama-3 scanner against two regex oracles: .NET's own regex on BMP text, the code-point aware regex on any text.</summary>
public class Llama3PreTokenizerTests
{
    private static string[] Scan(string text) => Llama3PreTokenizer.Split(text).Select(p => text.Substring(p.Offset, p.Length)).ToArray();

    // 's' and 'S' but not 'ſ' (which .NET's (?i) does not fold to 's'), apostrophes, CR/LF, several spaces, marks.
    private const string Bmp = "aZé \t\n\r\n'''sSdDlLtTmMrReEvV1234567890!?.,-_()ßПр中文\u00A0\u3000\u200B\u0301\u2028";
    private static readonly string[] Supplementary = ["𝐀", "𠀀", "𝟎", "😀", "👍🏽", "\U0001F1FA"];

    private static string RandomText(Random rng, bool supplementary)
    {
        var sb = new System.Text.StringBuilder();
        int n = rng.Next(0, 24);
        for (int k = 0; k < n; k++)
        {
            if (supplementary && rng.Next(4) == 0) sb.Append(Supplementary[rng.Next(Supplementary.Length)]);
            else sb.Append(Bmp[rng.Next(Bmp.Length)]);
        }
        return sb.ToString();
    }

    [Test]
    public void MatchesDotNetRegex_OnBmpText()
    {
        var plain = new Regex(LlamaTokenizer.Llama3Pattern, RegexOptions.CultureInvariant);
        var rng = new Random(5);
        for (int i = 0; i < 3000; i++)
        {
            var text = RandomText(rng, supplementary: false);
            Assert.That(Scan(text), Is.EqualTo(plain.Matches(text).Select(m => m.Value).ToArray()), text);
        }
    }

    [Test]
    public void MatchesCodePointRegex_WithSupplementaryCharacters()
    {
        var oracle = PreTokenizerRegex.Create(LlamaTokenizer.Llama3Pattern, compiled: false);
        var rng = new Random(6);
        for (int i = 0; i < 3000; i++)
        {
            var text = RandomText(rng, supplementary: true);
            Assert.That(Scan(text), Is.EqualTo(oracle.Matches(text).Select(m => m.Value).ToArray()), text);
        }
    }

    [TestCase("a𝐀b c", new[] { "a𝐀b", " c" })]
    [TestCase("𝟎𝟏𝟐𝟑", new[] { "𝟎𝟏𝟐", "𝟑" })]
    [TestCase("I'm sure they'll", new[] { "I", "'m", " sure", " they", "'ll" })]
    [TestCase("x'ſ", new[] { "x", "'ſ" })]
    [TestCase("a  \n\n  b  ", new[] { "a", "  \n\n", " ", " b", "  " })]
    [TestCase("!!\r\n\r\nok", new[] { "!!\r\n\r\n", "ok" })]
    public void Splits(string text, string[] expected) => Assert.That(Scan(text), Is.EqualTo(expected));

    [Test]
    public void LoneSurrogates_AreOtherCharacters()
    {
        Assert.That(Scan("a\uD800b"), Is.EqualTo(new[] { "a", "\uD800b" }));
        Assert.That(Scan("!\uDC00\uDC00x"), Is.EqualTo(new[] { "!\uDC00\uDC00", "x" }));
    }
}

using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace LoRI.Text;

/// <summary>
/// The pre-tokenizer regexes of Llama-3 and GPT-2, made to read code points as Hugging Face (Oniguruma) and
/// tiktoken (Rust) do. .NET's regex works on UTF-16 units, so `\p{L}` and `\p{N}` never match a character
/// outside the Basic Multilingual Plane (𝐀 U+1D400, CJK extension B, 𝟎 U+1D7CE): each half of its surrogate
/// pair is category Cs, i.e. "other". Left alone, "a𝐀b" would split as ["a", "𝐀", "b"] where HF keeps one
/// piece. Here every `\p{L}` / `\p{N}` also accepts the surrogate pairs of letters / numbers (built from
/// .NET's Unicode tables), the negated classes exclude surrogates and accept instead a pair that is neither,
/// or a lone surrogate, so that a pair is always consumed whole. Other patterns are used unchanged.
/// </summary>
public static class PreTokenizerRegex
{
    private static readonly Lazy<(string Letter, string Number)> Pairs = new(BuildPairs);

    /// <summary>The regex for <paramref name="pattern"/>: code-point aware for the Llama-3 and GPT-2 patterns.</summary>
    public static Regex Create(string pattern, bool compiled = true)
    {
        var options = RegexOptions.CultureInvariant | (compiled ? RegexOptions.Compiled : RegexOptions.None);
        return new Regex(Expand(pattern), options);
    }

    /// <summary>The code-point aware text of a known pattern, or the pattern itself.</summary>
    public static string Expand(string pattern)
    {
        if (pattern != LlamaTokenizer.Llama3Pattern && pattern != LlamaTokenizer.Gpt2Pattern) return pattern;
        var (lp, np) = Pairs.Value;
        string l = $@"(?:\p{{L}}|{lp})";
        string n = $@"(?:\p{{N}}|{np})";
        // A surrogate pair that is neither a letter nor a number, or a surrogate without its partner.
        string other = $@"(?:(?!{lp}|{np})[\uD800-\uDBFF][\uDC00-\uDFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF])";
        string notCrLfLN = $@"(?:[^\r\n\p{{L}}\p{{N}}\uD800-\uDFFF]|{other})";
        string notSpaceLN = $@"(?:[^\s\p{{L}}\p{{N}}\uD800-\uDFFF]|{other})";
        if (pattern == LlamaTokenizer.Llama3Pattern)
            return $@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|{notCrLfLN}?{l}+|{n}{{1,3}}| ?{notSpaceLN}+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        return $@"'s|'t|'re|'ve|'m|'ll|'d| ?{l}+| ?{n}+| ?{notSpaceLN}+|\s+(?!\S)|\s+";
    }

    private static (string, string) BuildPairs() => (PairsOf(IsLetter), PairsOf(IsNumber));

    private static bool IsLetter(UnicodeCategory c) => c is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
        or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter;

    private static bool IsNumber(UnicodeCategory c) => c is UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber
        or UnicodeCategory.OtherNumber;

    /// <summary>
    /// An alternation matching the UTF-16 surrogate pairs of every supplementary code point in the class:
    /// per high surrogate, a class of low-surrogate ranges; runs of high surrogates with the same ranges share one branch.
    /// </summary>
    private static string PairsOf(Func<UnicodeCategory, bool> inClass)
    {
        var branches = new List<(int HiFirst, int HiLast, string Lows)>();
        for (int hi = 0xD800; hi <= 0xDBFF; hi++)
        {
            var lows = new StringBuilder();
            int runStart = -1;
            for (int lo = 0xDC00; lo <= 0xE000; lo++)
            {
                bool member = lo < 0xE000 && inClass(CharUnicodeInfo.GetUnicodeCategory(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)));
                if (member && runStart < 0) runStart = lo;
                else if (!member && runStart >= 0)
                {
                    lows.Append(runStart == lo - 1 ? $@"\u{runStart:X4}" : $@"\u{runStart:X4}-\u{lo - 1:X4}");
                    runStart = -1;
                }
            }
            if (lows.Length == 0) continue;
            var s = lows.ToString();
            if (branches.Count > 0 && branches[^1].HiLast == hi - 1 && branches[^1].Lows == s)
                branches[^1] = (branches[^1].HiFirst, hi, s);
            else branches.Add((hi, hi, s));
        }
        var sb = new StringBuilder("(?:");
        for (int i = 0; i < branches.Count; i++)
        {
            var (a, b, lows) = branches[i];
            if (i > 0) sb.Append('|');
            sb.Append(a == b ? $@"\u{a:X4}" : $@"[\u{a:X4}-\u{b:X4}]").Append('[').Append(lows).Append(']');
        }
        return sb.Append(')').ToString();
    }
}

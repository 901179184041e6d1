using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace LoRI.Text;

/// <summary>
/// Llama-3's pre-tokenizer regex
///   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
/// as a hand-written scanner over code points, which is how Hugging Face (Oniguruma) and tiktoken (Rust regex)
/// read it. A .NET Regex reads UTF-16 units, so it never sees a supplementary letter or digit (𝐀, 𠀀, 𝟎) as one;
/// <see cref="PreTokenizerRegex"/> fixes that with a large generated pattern, this does it directly and faster.
/// Each alternative is tried in order at the current position, with the backtracking the regex would do
/// worked out by hand in the comments. Case-insensitive contractions accept what Unicode simple case folding
/// maps to those letters (so "'ſ" is a contraction, as in Oniguruma and Rust).
/// </summary>
public sealed class Llama3PreTokenizer : PreTokenizer
{
    public static readonly Llama3PreTokenizer Instance = new();

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) =>
        text is null ? [] : Split(text.AsSpan());

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Split(text);

    /// <summary>The pieces of <paramref name="text"/> as (offset, length) in UTF-16 units; they tile the text.</summary>
    public static List<(int Offset, int Length)> Split(ReadOnlySpan<char> text)
    {
        var pieces = new List<(int, int)>(text.Length / 4 + 1);
        int i = 0;
        while (i < text.Length)
        {
            int end = Match(text, i);
            pieces.Add((i, end - i));
            i = end;
        }
        return pieces;
    }

    private enum Kind : byte { Letter, Number, Space, Other }

    private static (Kind Kind, int Width) At(ReadOnlySpan<char> s, int i)
    {
        char c = s[i];
        if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
        {
            var cat = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(c, s[i + 1]));
            return (Classify(cat), 2);
        }
        if (char.IsSurrogate(c)) return (Kind.Other, 1);
        if (char.IsWhiteSpace(c)) return (Kind.Space, 1);
        return (Classify(CharUnicodeInfo.GetUnicodeCategory(c)), 1);
    }

    private static Kind Classify(UnicodeCategory cat) => cat switch
    {
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
            or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Kind.Letter,
        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Kind.Number,
        UnicodeCategory.SpaceSeparator or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator => Kind.Space,
        _ => Kind.Other,
    };

    private static bool IsCrLf(char c) => c is '\r' or '\n';

    private static int LetterRun(ReadOnlySpan<char> s, int i)
    {
        while (i < s.Length)
        {
            var (k, w) = At(s, i);
            if (k != Kind.Letter) break;
            i += w;
        }
        return i;
    }

    private static int SpaceRun(ReadOnlySpan<char> s, int i)
    {
        while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
        return i;
    }

    /// <summary>End of the match starting at <paramref name="i"/> (always past i: every character is matched by some alternative).</summary>
    private static int Match(ReadOnlySpan<char> s, int i)
    {
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if (s[i] == '\'' && i + 1 < s.Length)
        {
            char a = Fold(s[i + 1]);
            if (a is 's' or 't' or 'm' or 'd') return i + 2;
            if (i + 2 < s.Length)
            {
                char b = Fold(s[i + 2]);
                if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
            }
        }

        var (k0, w0) = At(s, i);
        // [^\r\n\p{L}\p{N}]?\p{L}+ : a letter run, optionally led by one code point that is not CR, LF, letter or number.
        if (k0 == Kind.Letter) return LetterRun(s, i + w0);
        if (k0 != Kind.Number && !IsCrLf(s[i]) && i + w0 < s.Length && At(s, i + w0).Kind == Kind.Letter)
            return LetterRun(s, i + w0);

        // \p{N}{1,3}
        if (k0 == Kind.Number)
        {
            int j = i + w0;
            for (int n = 1; n < 3 && j < s.Length; n++)
            {
                var (k, w) = At(s, j);
                if (k != Kind.Number) break;
                j += w;
            }
            return j;
        }

        // " ?[^\s\p{L}\p{N}]+[\r\n]*": an optional space, then a run of "other" code points, then CRs and LFs.
        // (Without the space the run would have to start at a space, which it cannot: no backtracking option.)
        {
            int j = s[i] == ' ' ? i + 1 : i;
            int start = j;
            while (j < s.Length)
            {
                var (k, w) = At(s, j);
                if (k != Kind.Other) break;
                j += w;
            }
            if (j > start)
            {
                while (j < s.Length && IsCrLf(s[j])) j++;
                return j;
            }
        }

        // From here s[i] is whitespace (letters, numbers and others are all taken above).
        int e = SpaceRun(s, i);
        // \s*[\r\n]+ : greedy \s* gives back until a CR/LF can follow; [\r\n]+ then runs to the end of the CR/LF
        // run, so the match ends just after the last CR or LF of the whitespace run.
        for (int j = e - 1; j >= i; j--)
            if (IsCrLf(s[j])) return j + 1;
        // \s+(?!\S) : the whole run at the end of the text, else the run minus its last character (which then
        // precedes the non-space), when that leaves at least one.
        if (e == s.Length) return e;
        if (e - 1 > i) return e - 1;
        // \s+
        return e;
    }

    // Simple case folding of the letters the contractions use ('ſ' U+017F folds to 's'; 'K' U+212A is not among them).
    private static char Fold(char c) => c == '\u017F' ? 's' : char.ToLowerInvariant(c);
}

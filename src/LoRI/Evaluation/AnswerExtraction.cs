using System.Globalization;
using System.Text.RegularExpressions;

namespace LoRI.Evaluation;

/// <summary>
/// The label set of one multiple-choice task: the alternatives the reference's regex accepts, matched
/// case-sensitively as Python's re.findall does.
/// </summary>
public sealed partial class LabelSet
{
    public string Name { get; }
    public Regex Pattern { get; }

    private LabelSet(string name, Regex pattern) { Name = name; Pattern = pattern; }

    public static readonly LabelSet TrueFalse = new("true|false", TrueFalseRegex());
    public static readonly LabelSet Solution = new("solution1|solution2", SolutionRegex());
    public static readonly LabelSet Answer = new("answer1..answer5", AnswerRegex());
    public static readonly LabelSet Ending = new("ending1..ending4", EndingRegex());
    public static readonly LabelSet Option = new("option1|option2", OptionRegex());

    private static readonly LabelSet[] All = [TrueFalse, Solution, Answer, Ending, Option];

    /// <summary>The label set of a task by its dataset name, as the reference maps them.</summary>
    public static LabelSet ForTask(string task) => task.ToLowerInvariant().Replace('-', '_') switch
    {
        "boolq" => TrueFalse,
        "piqa" => Solution,
        "social_i_qa" or "siqa" or "arc_challenge" or "arc_c" or "arc_easy" or "arc_e" or "openbookqa" or "obqa" => Answer,
        "hellaswag" => Ending,
        "winogrande" => Option,
        _ => throw new ArgumentException(
            $"unknown task '{task}': expected boolq, piqa, social_i_qa, arc_challenge, arc_easy, openbookqa, hellaswag or winogrande"),
    };

    /// <summary>The label set whose pattern matches the gold answer, for data that does not name its task; null if none does.</summary>
    public static LabelSet? FromGold(string gold)
    {
        var g = AnswerExtraction.GoldText(gold);
        foreach (var s in All) if (s.Pattern.IsMatch(g)) return s;
        return null;
    }

    [GeneratedRegex("true|false", RegexOptions.CultureInvariant)] private static partial Regex TrueFalseRegex();
    [GeneratedRegex("solution1|solution2", RegexOptions.CultureInvariant)] private static partial Regex SolutionRegex();
    [GeneratedRegex("answer1|answer2|answer3|answer4|answer5", RegexOptions.CultureInvariant)] private static partial Regex AnswerRegex();
    [GeneratedRegex("ending1|ending2|ending3|ending4", RegexOptions.CultureInvariant)] private static partial Regex EndingRegex();
    [GeneratedRegex("option1|option2", RegexOptions.CultureInvariant)] private static partial Regex OptionRegex();
}

/// <summary>
/// The reference's answer extraction (lori-method.md section 5).
///  - Choice tasks: remove commas, keep the text after the last "### Response:", take the first match of the
///    task's label set; the gold label is what follows "the correct answer is". No match is a wrong answer.
///  - GSM8K: remove commas; the first number after "The final answer is: ", else the last number of the text;
///    prediction and gold are compared as numbers (decimal, so 18, 18.0 and 18.00 are equal).
///  - Exact: the two strings after trimming whitespace.
/// </summary>
public static partial class AnswerExtraction
{
    public const string ResponseMarker = "### Response:";
    public const string FinalAnswerMarker = "The final answer is: ";
    public const string GoldMarker = "the correct answer is";

    /// <summary>Commas removed and only the text after the last "### Response:" kept (all of it if there is none).</summary>
    public static string ResponseText(string text)
    {
        var t = text.Replace(",", "");
        int i = t.LastIndexOf(ResponseMarker, StringComparison.Ordinal);
        return i < 0 ? t : t[(i + ResponseMarker.Length)..];
    }

    /// <summary>The first label of the set in the response part of the text, or null.</summary>
    public static string? ExtractChoice(string text, LabelSet labels)
    {
        var m = labels.Pattern.Match(ResponseText(text).Trim());
        return m.Success ? m.Value : null;
    }

    /// <summary>The text after "the correct answer is" (all of it when the phrase is absent, e.g. a bare "true").</summary>
    public static string GoldText(string gold)
    {
        int i = gold.LastIndexOf(GoldMarker, StringComparison.Ordinal);
        return i < 0 ? gold : gold[(i + GoldMarker.Length)..];
    }

    /// <summary>The gold label: the first label of the set after "the correct answer is", or null.</summary>
    public static string? ChoiceGold(string gold, LabelSet labels)
    {
        var m = labels.Pattern.Match(GoldText(gold.Replace(",", "")));
        return m.Success ? m.Value : null;
    }

    public static bool ChoiceCorrect(string generated, string gold, LabelSet labels)
    {
        var g = ChoiceGold(gold, labels) ?? throw new ArgumentException($"gold answer '{gold}' holds no label of {labels.Name}");
        return ExtractChoice(generated, labels) == g;
    }

    /// <summary>The GSM8K answer of a text: first number after "The final answer is: ", else the last number; null if none.</summary>
    public static decimal? ExtractNumber(string text)
    {
        var t = ResponseText(text);
        int i = t.IndexOf(FinalAnswerMarker, StringComparison.Ordinal);
        if (i >= 0)
        {
            var m = NumberRegex().Match(t, i + FinalAnswerMarker.Length);
            if (m.Success) return ParseNumber(m.Value);
        }
        var all = NumberRegex().Matches(t);
        return all.Count == 0 ? null : ParseNumber(all[^1].Value);
    }

    /// <summary>The gold number of a GSM8K answer: after "####" in the raw dataset, else by ExtractNumber's rule.</summary>
    public static decimal? GsmGold(string gold)
    {
        int i = gold.LastIndexOf("####", StringComparison.Ordinal);
        return ExtractNumber(i < 0 ? gold : FinalAnswerMarker + gold[(i + 4)..]);
    }

    public static bool Gsm8kCorrect(string generated, string gold)
    {
        var g = GsmGold(gold) ?? throw new ArgumentException($"gold answer '{gold}' holds no number");
        return ExtractNumber(generated) == g;
    }

    public static bool ExactMatch(string generated, string gold) => generated.Trim() == gold.Trim();

    private static decimal? ParseNumber(string s)
    {
        s = s.TrimEnd('.');
        return decimal.TryParse(s, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var d)
            ? d : null;
    }

    // The reference's number pattern: an optional minus, digits, an optional point and more digits.
    [GeneratedRegex(@"-?\d+\.?\d*", RegexOptions.CultureInvariant)] private static partial Regex NumberRegex();
}

using LoRI.Training.Data;

namespace LoRI.Demo;

/// <summary>One prompt/response pair of a demo task; the response is the one exactly right answer.</summary>
public sealed record DemoExample(string Prompt, string Answer);

/// <summary>
/// A task whose answers can be checked exactly, generated from a seed. Prompts are "keyword input=" and the
/// response is the answer (then EOS), in plain bytes: the demo's tokenizer is byte-level, so every character
/// is one token and no task is made easier or harder by how its strings happen to split. Inputs have a fixed
/// length (4 symbols), which lets a 2-layer model learn the position-to-position maps in a few hundred steps.
/// </summary>
public sealed class DemoTask
{
    /// <summary>Draws one input, advancing the generator.</summary>
    public delegate string Draw(ref SplitMix64 rng);

    public string Name { get; }
    /// <summary>What the prompt starts with (short: every prompt token costs compute in every training step).</summary>
    public string Keyword { get; }
    /// <summary>One line on what the task asks.</summary>
    public string Description { get; }
    private readonly Draw _input;
    private readonly Func<string, string> _answer;

    public DemoTask(string name, string keyword, string description, Draw input, Func<string, string> answer)
    {
        Name = name;
        Keyword = keyword;
        Description = description;
        _input = input;
        _answer = answer;
    }

    public DemoExample Make(string input) => new($"{Keyword} {input}=", _answer(input));

    /// <summary>
    /// Draws distinct examples: the first <paramref name="test"/> are the held-out set, the next
    /// <paramref name="train"/> the training set, and no input appears in both. Fewer come back when the
    /// task has fewer distinct inputs than asked for (the draw gives up after many repeats).
    /// </summary>
    public (List<DemoExample> Train, List<DemoExample> Test) Split(int train, int test, ulong seed)
    {
        var rng = new SplitMix64(seed ^ Hash(Name));
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var tr = new List<DemoExample>(train);
        var te = new List<DemoExample>(test);
        int misses = 0;
        while (tr.Count < train && misses < 100_000)
        {
            var s = _input(ref rng);
            if (!seen.Add(s)) { misses++; continue; }
            (te.Count < test ? te : tr).Add(Make(s));
        }
        return (tr, te);
    }

    /// <summary>FNV-1a of the name: each task its own stream from one seed.</summary>
    public static ulong Hash(string s)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in s) { h ^= c; h *= 1099511628211UL; }
        return h;
    }

    private static string Letters(ref SplitMix64 rng, int minLen, int maxLen, string alphabet)
    {
        int len = minLen + (int)rng.NextBelow((ulong)(maxLen - minLen + 1));
        var c = new char[len];
        for (int i = 0; i < len; i++) c[i] = alphabet[(int)rng.NextBelow((ulong)alphabet.Length)];
        return new string(c);
    }

    /// <summary>The letters of the letter tasks: 16 of them, 65,536 inputs of length 4.</summary>
    public const string Alphabet = "abcdefghijklmnop";
    public const string Digits = "0123456789";

    /// <summary>Reverse 4 letters: "rev kqdm=" -> "mdqk".</summary>
    public static DemoTask Reverse() => new("reverse", "rev", "reverse 4 letters",
        (ref SplitMix64 r) => Letters(ref r, 4, 4, Alphabet),
        s => new string(s.Reverse().ToArray()));

    /// <summary>Sort 4 digits ascending: "sort 5137=" -> "1357".</summary>
    public static DemoTask Sort() => new("sort", "sort", "sort 4 digits",
        (ref SplitMix64 r) => Letters(ref r, 4, 4, Digits),
        s => new string(s.Order().ToArray()));

    /// <summary>Mirror cipher on 4 letters of a..p (a&lt;-&gt;p, b&lt;-&gt;o, ...): "ciph abop=" -> "poba".</summary>
    public static DemoTask Cipher() => new("cipher", "ciph", "mirror cipher (a<->p, b<->o, ...) of 4 letters",
        (ref SplitMix64 r) => Letters(ref r, 4, 4, Alphabet),
        s => new string(s.Select(ch => Alphabet[Alphabet.Length - 1 - Alphabet.IndexOf(ch)]).ToArray()));

    /// <summary>Rotate 4 letters left by one: "rot abcd=" -> "bcda".</summary>
    public static DemoTask Rotate() => new("rotate", "rot", "rotate 4 letters left by one",
        (ref SplitMix64 r) => Letters(ref r, 4, 4, Alphabet),
        s => s[1..] + s[0]);

    /// <summary>Each of 4 letters of a..j as its index digit: "dig bjac=" -> "1902".</summary>
    public static DemoTask Index() => new("index", "dig", "each of 4 letters a..j as its index digit",
        (ref SplitMix64 r) => Letters(ref r, 4, 4, Alphabet[..10]),
        s => new string(s.Select(ch => Digits[ch - 'a']).ToArray()));

    /// <summary>Shift each of 4 letters one place on in a..p (p wraps to a): "next abcp=" -> "bcda".</summary>
    public static DemoTask Shift() => new("shift", "next", "shift 4 letters one place (p wraps to a)",
        (ref SplitMix64 r) => Letters(ref r, 4, 4, Alphabet),
        s => new string(s.Select(ch => Alphabet[(Alphabet.IndexOf(ch) + 1) % Alphabet.Length]).ToArray()));

    /// <summary>Add two numbers below 50: "add 23+45=" -> "68".</summary>
    public static DemoTask Add() => new("add", "add", "add two numbers below 50",
        (ref SplitMix64 r) => { ulong a = r.NextBelow(50); return $"{a:D2}+{r.NextBelow(50):D2}"; },
        s => (int.Parse(s[..2], System.Globalization.CultureInfo.InvariantCulture) + int.Parse(s[3..], System.Globalization.CultureInfo.InvariantCulture))
            .ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>
    /// What the base model is pre-trained on: copying 4 symbols ("copy x9ab=" -> "x9ab") drawn from every symbol
    /// the tasks read or write, so that no task needs an output token the base has never produced (the adapters
    /// do not touch the embeddings or lm_head).
    /// </summary>
    public static DemoTask Copy() => new("copy", "copy", "copy 4 letters or digits",
        (ref SplitMix64 r) => Letters(ref r, 4, 4, Alphabet + Digits),
        s => s);

    /// <summary>The demo's tasks in order; the first two are the continual-learning pair.</summary>
    public static IReadOnlyList<DemoTask> Standard(int count) => count switch
    {
        3 => [Cipher(), Shift(), Index()],
        4 => [Cipher(), Shift(), Index(), Rotate()],
        _ => throw new ArgumentOutOfRangeException(nameof(count), $"the demo has 3 or 4 tasks, not {count}"),
    };
}

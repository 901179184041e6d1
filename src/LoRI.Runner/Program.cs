using System.Globalization;
using LoRI.Runner.Verbs;

namespace LoRI.Runner;

/// <summary>A verb of the CLI: a name, one line of help, a usage synopsis, and the code that runs it.</summary>
public sealed record Verb(string Name, string Summary, string Usage, Func<Args, int> Run);

public static class Program
{
    /// <summary>Every verb, in the order `help` lists them. Each lives in Verbs/NameVerb.cs.</summary>
    public static readonly Verb[] Verbs =
    [
        InitModelVerb.Verb,
        InfoVerb.Verb,
        TokenizeVerb.Verb,
        GenerateVerb.Verb,
        ScoreVerb.Verb,
        AdapterInfoVerb.Verb,
        MaskVerb.Verb,
        MergeVerb.Verb,
        MergeIntoModelVerb.Verb,
        ExportGgufVerb.Verb,
        TrainVerb.Verb,
        EvalVerb.Verb,
        SelftestVerb.Verb,
        PtxVerb.Verb,
        BenchGpuVerb.Verb,
        DemoVerb.Verb,
    ];

    /// <summary>Whether this run has --verbose: stack traces on errors, and the verbs' extra reports (e.g. the decode path) on stderr.</summary>
    public static bool Verbose { get; private set; }

    public static int Main(string[] argv)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        bool verbose = Verbose = argv.Contains("--verbose");
        var rest = argv.Where(a => a != "--verbose").ToArray();

        // No arguments runs the demo: the project's main job on a model it makes itself.
        if (rest.Length == 0) rest = ["demo"];
        if (rest[0] is "help" or "--help" or "-h")
        {
            PrintHelp(Console.Out);
            return 0;
        }
        var verb = Verbs.FirstOrDefault(v => v.Name == rest[0]);
        if (verb is null)
        {
            Console.Error.WriteLine($"error: unknown verb '{rest[0]}'. Run 'lori help' for the list.");
            return 2;
        }
        try
        {
            return verb.Run(new Args(rest.Skip(1)));
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine($"usage: lori {verb.Usage}");
            return 2;
        }
        catch (Exception e) when (e is LoRIException or IOException or UnauthorizedAccessException or ArgumentException
                                       or InvalidOperationException or NotSupportedException or FormatException
                                       or OutOfMemoryException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            if (verbose) Console.Error.WriteLine(e);
            return 1;
        }
    }

    public static void PrintHelp(TextWriter w)
    {
        w.WriteLine("lori: Llama-3 inference and LoRI adapter training in .NET");
        w.WriteLine();
        w.WriteLine("usage: lori VERB [options]      (add --verbose for stack traces on errors; no arguments runs `demo`)");
        w.WriteLine();
        foreach (var v in Verbs) w.WriteLine($"  {v.Name,-18} {v.Summary}");
    }
}

using LoRI.Demo;

namespace LoRI.Runner.Verbs;

/// <summary>`demo` (and the runner with no arguments): the whole LoRI pipeline on a model it pre-trains itself (LoRI.Demo.DemoRun).</summary>
public static class DemoVerb
{
    public static readonly Verb Verb = new("demo", "the LoRI story on a built-in model: pre-train, LoRA/LoRI-D/LoRI-S per task, merges, continual learning",
        "demo [--quick | --full] [--out DIR] [--json] [--seed S] " + Session.DeviceUsage +
        " [--tasks 3|4] [--hidden N] [--layers N] [--rank R] [--batch N] [--pretrain-batch N] [--pretrain-steps N] [--steps N]" +
        " [--pretrain-lr X] [--lr X] [--lr-d X] [--lr-s X] [--train N] [--test N] [--threads N]", Run);

    public const string DefaultOut = "lori-demo-out";

    private static int Run(Args a)
    {
        bool quick = a.Flag("quick"), full = a.Flag("full"), json = a.Flag("json");
        if (quick && full) throw new UsageException("--quick and --full exclude each other");
        var outDir = a.Get("out") ?? DefaultOut;
        ulong seed = (ulong)a.GetLong("seed", 1);
        var device = a.Get("device") ?? "auto";
        var p = DemoOptions.For(quick ? DemoProfile.Quick : full ? DemoProfile.Full : DemoProfile.Standard);
        p = p with
        {
            Tasks = a.GetInt("tasks", p.Tasks), Hidden = a.GetInt("hidden", p.Hidden), Layers = a.GetInt("layers", p.Layers),
            Rank = a.GetInt("rank", p.Rank), BatchSize = a.GetInt("batch", p.BatchSize),
            PretrainBatchSize = a.GetInt("pretrain-batch", p.PretrainBatchSize),
            PretrainSteps = a.GetInt("pretrain-steps", p.PretrainSteps), AdapterSteps = a.GetInt("steps", p.AdapterSteps),
            PretrainLr = a.GetFloat("pretrain-lr", (float)p.PretrainLr), TrainExamples = a.GetInt("train", p.TrainExamples),
            TestExamples = a.GetInt("test", p.TestExamples), Threads = a.GetInt("threads", p.Threads),
        };
        float lr = a.GetFloat("lr", float.NaN), lrD = a.GetFloat("lr-d", float.NaN), lrS = a.GetFloat("lr-s", float.NaN);
        if (!float.IsNaN(lr)) p = p with { LoraLr = lr };
        if (!float.IsNaN(lrD)) p = p with { LoriDLr = lrD };
        if (!float.IsNaN(lrS)) p = p with { LoriSLr = lrS };
        a.EnsureAllUsed();
        try { p.Validate(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        using var backend = Session.CreateBackend(device);
        var o = p with { OutDir = Path.GetFullPath(outDir), Seed = seed, Backend = backend, Progress = Console.Error };
        var report = DemoRun.Run(o);
        if (json)
        {
            Console.Out.Write(System.Text.Encoding.UTF8.GetString(report.ToJson()));
            Console.Out.WriteLine();
        }
        else
        {
            Console.WriteLine();
            Console.WriteLine($"LoRI demo: {report.ModelSummary}, {report.ModelParameters:N0} parameters, pre-trained in this run to copy strings " +
                              $"(copy accuracy {report.PretrainCopyAccuracy:P0}); rank {report.Rank}, LoRI-S sparsity {report.Sparsity:P0}.");
            Console.WriteLine();
            Console.Write(report.Table());
            Console.WriteLine();
            Console.WriteLine($"wrote {report.Files.Count} files to {report.OutDir} (adapters/, masks/, plots/, report.json) in {report.Seconds:F0} s");
        }
        return 0;
    }
}

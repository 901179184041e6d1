using System.Text;
using System.Text.Json;

namespace LoRI.Demo;

/// <summary>A task's data and the base model's score on it.</summary>
public sealed record DemoTaskResult(string Name, string Description, string ExamplePrompt, string ExampleAnswer,
                                    int TrainExamples, int TestExamples, double BaseAccuracy);

/// <summary>One adapter trained alone on one task.</summary>
public sealed record DemoAdapterResult(string Task, string Method, long Trainable, long NonZero, double Accuracy,
                                       IReadOnlyList<double> Loss, double Seconds, IReadOnlyList<(string Prompt, string Expected, string Got)> Samples);

/// <summary>The task adapters of one method merged, scored on every task.</summary>
public sealed record DemoMergeResult(string Method, string Merge, float Weight, IReadOnlyDictionary<string, double> Accuracy);

/// <summary>Task 1's adapter trained further on task 2 (method doc section 7).</summary>
public sealed record DemoContinualResult(string Method, string Task1, string Task2, double Task1Before, double Task1After,
                                         double Task2After, IReadOnlyList<double> Loss);

/// <summary>Density of a task's mask per layer and projection.</summary>
public sealed record DemoMaskResult(string Task, double Density, int[] Layers, string[] Projections, double[,] Grid);

/// <summary>What a demo run measured. Every number comes from the run.</summary>
public sealed class DemoReport
{
    public static readonly string[] Methods = ["lora", "lori-d", "lori-s"];

    public required string Profile { get; init; }
    public required string Device { get; init; }
    public required ulong Seed { get; init; }
    public required string ModelSummary { get; init; }
    public required long ModelParameters { get; init; }
    public required int Rank { get; init; }
    public required double Sparsity { get; init; }
    public required IReadOnlyList<double> PretrainLoss { get; init; }
    public required double PretrainCopyAccuracy { get; init; }
    public required IReadOnlyList<DemoTaskResult> Tasks { get; init; }
    public required IReadOnlyList<DemoAdapterResult> Adapters { get; init; }
    public required IReadOnlyList<DemoMergeResult> Merges { get; init; }
    public required IReadOnlyList<DemoContinualResult> Continual { get; init; }
    public required IReadOnlyList<DemoMaskResult> Masks { get; init; }
    public required IReadOnlyList<string> Files { get; init; }
    public required IReadOnlyList<(string Phase, double Seconds)> Timings { get; init; }
    /// <summary>The run's settings (steps, batch, learning rates) by name.</summary>
    public required IReadOnlyList<(string Name, double Value)> Settings { get; init; }
    public double Seconds { get; init; }
    public string? OutDir { get; init; }

    public DemoAdapterResult Adapter(string task, string method) => Adapters.First(a => a.Task == task && a.Method == method);

    /// <summary>Mean over tasks of (alone - merged) accuracy: how much merging costs each method.</summary>
    public double MeanMergeDrop(string method, string merge)
    {
        var m = Merges.First(x => x.Method == method && x.Merge == merge);
        return Tasks.Average(t => Adapter(t.Name, method).Accuracy - m.Accuracy[t.Name]);
    }

    /// <summary>The summary table: one row per method, accuracy alone, merged (cat, linear) and after continual learning.</summary>
    public string Table()
    {
        var sb = new StringBuilder();
        var names = Tasks.Select(t => Short(t.Name)).ToList();
        string Cols(IEnumerable<string> v) => string.Join(" ", v.Select(x => x.PadLeft(5)));
        string Pct(double v) => double.IsNaN(v) ? "-" : (100 * v).ToString("F0", System.Globalization.CultureInfo.InvariantCulture);
        string taskHead = Cols(names);
        int w = taskHead.Length;
        var ct = Continual.FirstOrDefault();
        string clHead = ct is null ? "" : $" | continual {Short(ct.Task1)} then {Short(ct.Task2)}";
        sb.AppendLine($"{"",-7} {"",10} {"",10} | {"alone".PadRight(w)} | {"merged cat".PadRight(w)} | {"merged linear".PadRight(w)}{clHead}");
        sb.AppendLine($"{"method",-7} {"trainable",10} {"non-zero",10} | {taskHead} | {taskHead} | {taskHead}" +
                      (ct is null ? "" : $" | {"kept",5} {"new",5} {"forgot",6}"));
        int ruleLen = 7 + 1 + 10 + 1 + 10 + 3 * (3 + w) + (ct is null ? 0 : 3 + 18);
        sb.AppendLine(new string('-', ruleLen));
        string dash = Cols(names.Select(_ => "-"));
        sb.AppendLine($"{"base",-7} {0,10:N0} {0,10:N0} | {Cols(Tasks.Select(t => Pct(t.BaseAccuracy)))} | {dash} | {dash}" +
                      (ct is null ? "" : $" | {"-",5} {"-",5} {"-",6}"));
        foreach (var m in Methods)
        {
            var rows = Tasks.Select(t => Adapter(t.Name, m)).ToList();
            var cat = Merges.First(x => x.Method == m && x.Merge == "cat");
            var lin = Merges.First(x => x.Method == m && x.Merge == "linear");
            var cl = Continual.FirstOrDefault(x => x.Method == m);
            string clCols = cl is null ? "" : $" | {Pct(cl.Task1After),5} {Pct(cl.Task2After),5} {Pct(cl.Task1Before - cl.Task1After),6}";
            sb.AppendLine($"{m,-7} {rows[0].Trainable,10:N0} {rows[0].NonZero,10:N0} | {Cols(rows.Select(r => Pct(r.Accuracy)))} | " +
                          $"{Cols(Tasks.Select(t => Pct(cat.Accuracy[t.Name])))} | {Cols(Tasks.Select(t => Pct(lin.Accuracy[t.Name])))}{clCols}");
        }
        sb.AppendLine(new string('-', ruleLen));
        sb.AppendLine("accuracy in % (exact match, greedy) on each task's held-out set; trainable and non-zero parameters of task 1's adapter;");
        sb.AppendLine($"merge weights: {string.Join(", ", Merges.Where(x => x.Merge == "cat").Select(x => $"{x.Method} {x.Weight:0.##}"))} per adapter; " +
                      "forgot = task 1 alone minus task 1 after training task 2.");
        sb.Append(Verdict());
        return sb.ToString();
    }

    /// <summary>Mean over tasks of the merged model's accuracy.</summary>
    public double MeanMerged(string method, string merge) =>
        Tasks.Average(t => Merges.First(x => x.Method == method && x.Merge == merge).Accuracy[t.Name]);

    /// <summary>
    /// Plain sentences on what the numbers show, written from the numbers (no claim the run did not make).
    /// Methods are compared by what they keep (accuracy after merging, task 1 after continual training), not by
    /// how much they lose: a method that learned less alone would otherwise look better for losing less.
    /// </summary>
    public string Verdict()
    {
        var sb = new StringBuilder();
        string P(double v) => (100 * v).ToString("0", System.Globalization.CultureInfo.InvariantCulture);
        const double tie = 0.005;
        string[] methods = ["lora", "lori-d", "lori-s"];
        string Label(string m) => m switch { "lora" => "LoRA", "lori-d" => "LoRI-D", _ => "LoRI-S" };
        foreach (var merge in new[] { "cat", "linear" })
        {
            var kept = methods.Select(m => (Method: m, Kept: MeanMerged(m, merge), Drop: MeanMergeDrop(m, merge))).ToList();
            var best = kept.MaxBy(x => x.Kept);
            double lora = kept[0].Kept;
            string verdict = best.Kept <= tie ? "no method keeps its tasks after merging in this run."
                : best.Kept - lora <= tie ? "LoRI does not beat LoRA on interference in this run."
                : $"{Label(best.Method)} keeps the most.";
            sb.AppendLine($"merging ({merge}): mean accuracy {string.Join(", ", kept.Select(k => $"{P(k.Kept)}% for {Label(k.Method)} ({P(k.Drop)} points lost)"))}: {verdict}");
        }
        if (Continual.Count > 0)
        {
            var best = Continual.MaxBy(c => c.Task1After)!;
            var lora = Continual.FirstOrDefault(c => c.Method == "lora");
            string verdict = best.Task1After <= tie ? "no method keeps task 1 here."
                : lora is not null && best.Task1After - lora.Task1After <= tie ? "LoRI does not forget less than LoRA here."
                : $"{best.Method} keeps the most of task 1.";
            sb.AppendLine($"continual learning: task 1 keeps {string.Join(", ", Continual.Select(c => $"{P(c.Task1After)}% with {c.Method} (was {P(c.Task1Before)}%)"))}: {verdict}");
        }
        return sb.ToString();
    }

    private static string Short(string task) => task.Length <= 5 ? task : task[..5];

    public byte[] ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("profile", Profile);
            w.WriteString("device", Device);
            w.WriteNumber("seed", Seed);
            w.WriteNumber("seconds", Math.Round(Seconds, 2));
            if (OutDir is not null) w.WriteString("out_dir", OutDir);
            w.WriteStartObject("model");
            w.WriteString("summary", ModelSummary);
            w.WriteNumber("parameters", ModelParameters);
            w.WriteNumber("pretrain_final_loss", PretrainLoss.Count > 0 ? Math.Round(PretrainLoss[^1], 5) : 0);
            w.WriteNumber("copy_accuracy", PretrainCopyAccuracy);
            Curve(w, "pretrain_loss", PretrainLoss);
            w.WriteEndObject();
            w.WriteNumber("rank", Rank);
            w.WriteStartObject("settings");
            foreach (var (n, v) in Settings) w.WriteNumber(n, v);
            w.WriteEndObject();
            w.WriteNumber("sparsity", Sparsity);
            w.WriteStartArray("tasks");
            foreach (var t in Tasks)
            {
                w.WriteStartObject();
                w.WriteString("name", t.Name);
                w.WriteString("description", t.Description);
                w.WriteString("example_prompt", t.ExamplePrompt);
                w.WriteString("example_answer", t.ExampleAnswer);
                w.WriteNumber("train_examples", t.TrainExamples);
                w.WriteNumber("test_examples", t.TestExamples);
                w.WriteNumber("base_accuracy", t.BaseAccuracy);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("adapters");
            foreach (var a in Adapters)
            {
                w.WriteStartObject();
                w.WriteString("task", a.Task);
                w.WriteString("method", a.Method);
                w.WriteNumber("trainable_parameters", a.Trainable);
                w.WriteNumber("nonzero_parameters", a.NonZero);
                w.WriteNumber("accuracy", a.Accuracy);
                w.WriteNumber("seconds", Math.Round(a.Seconds, 2));
                Curve(w, "loss", a.Loss);
                w.WriteStartArray("samples");
                foreach (var (p, e, g) in a.Samples)
                {
                    w.WriteStartObject();
                    w.WriteString("prompt", p);
                    w.WriteString("expected", e);
                    w.WriteString("got", g);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("merges");
            foreach (var m in Merges)
            {
                w.WriteStartObject();
                w.WriteString("method", m.Method);
                w.WriteString("merge", m.Merge);
                w.WriteNumber("weight", m.Weight);
                w.WriteStartObject("accuracy");
                foreach (var t in Tasks) w.WriteNumber(t.Name, m.Accuracy[t.Name]);
                w.WriteEndObject();
                w.WriteNumber("mean_drop", Math.Round(MeanMergeDrop(m.Method, m.Merge), 5));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("continual");
            foreach (var c in Continual)
            {
                w.WriteStartObject();
                w.WriteString("method", c.Method);
                w.WriteString("task1", c.Task1);
                w.WriteString("task2", c.Task2);
                w.WriteNumber("task1_before", c.Task1Before);
                w.WriteNumber("task1_after", c.Task1After);
                w.WriteNumber("task2_after", c.Task2After);
                w.WriteNumber("forgetting", Math.Round(c.Task1Before - c.Task1After, 5));
                Curve(w, "loss", c.Loss);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("masks");
            foreach (var m in Masks)
            {
                w.WriteStartObject();
                w.WriteString("task", m.Task);
                w.WriteNumber("density", Math.Round(m.Density, 6));
                w.WriteStartObject("density_per_layer");
                for (int i = 0; i < m.Layers.Length; i++)
                {
                    w.WriteStartObject(m.Layers[i].ToString(System.Globalization.CultureInfo.InvariantCulture));
                    for (int j = 0; j < m.Projections.Length; j++) w.WriteNumber(m.Projections[j], Math.Round(m.Grid[i, j], 6));
                    w.WriteEndObject();
                }
                w.WriteEndObject();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("timings");
            foreach (var (p, s) in Timings) w.WriteNumber(p, Math.Round(s, 2));
            w.WriteEndObject();
            w.WriteStartArray("files");
            foreach (var f in Files) w.WriteStringValue(f);
            w.WriteEndArray();
            w.WriteString("verdict", Verdict().TrimEnd());
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static void Curve(Utf8JsonWriter w, string name, IReadOnlyList<double> v)
    {
        w.WriteStartArray(name);
        foreach (var x in v) w.WriteNumberValue(Math.Round(x, 5));
        w.WriteEndArray();
    }
}

using LoRI.Plotting;

namespace LoRI.Demo;

/// <summary>
/// The demo's PNG plots, drawn from the report alone: loss curves (pre-training, each task's three methods,
/// continual learning), accuracy per method (alone and merged, mean over tasks, and per task) and the masks'
/// density per layer and projection.
/// </summary>
public static class DemoPlots
{
    /// <summary>Writes every plot under <paramref name="dir"/>; adds each file's path relative to the report's folder to <paramref name="files"/>.</summary>
    public static void Write(DemoReport report, string dir, List<string> files)
    {
        Directory.CreateDirectory(dir);
        void Save(Canvas c, string name)
        {
            c.SavePng(Path.Combine(dir, name));
            files.Add("plots/" + name);
        }

        Save(Charts.Lines([Curve("copy", report.PretrainLoss)], "pre-training the base model (full fine-tuning)",
            "step", "loss (sum over response tokens)"), "loss-pretrain.png");
        foreach (var t in report.Tasks)
            Save(Charts.Lines(DemoReport.Methods.Select(m => Curve(m, report.Adapter(t.Name, m).Loss)).ToList(),
                $"{t.Name}: training loss", "step", "loss (sum over response tokens)"), $"loss-{t.Name}.png");
        if (report.Continual.Count > 0)
        {
            var c0 = report.Continual[0];
            Save(Charts.Lines(report.Continual.Select(c => Curve(c.Method, c.Loss)).ToList(),
                $"continual: {c0.Task1} adapter trained on {c0.Task2}", "step", "loss"), "loss-continual.png");
        }

        var bars = new List<(string, double)> { ("base", 100 * report.Tasks.Average(t => t.BaseAccuracy)) };
        foreach (var m in DemoReport.Methods)
        {
            bars.Add(($"{m}", 100 * report.Tasks.Average(t => report.Adapter(t.Name, m).Accuracy)));
            foreach (var merge in new[] { "cat", "linear" })
            {
                var r = report.Merges.First(x => x.Method == m && x.Merge == merge);
                bars.Add(($"{m} {merge}", 100 * report.Tasks.Average(t => r.Accuracy[t.Name])));
            }
        }
        Save(Charts.Bars(bars, "mean accuracy over tasks: alone and merged", "accuracy %", width: 900), "accuracy.png");
        var perTask = new List<(string, double)>();
        foreach (var t in report.Tasks)
            foreach (var m in DemoReport.Methods)
                perTask.Add(($"{t.Name[..Math.Min(4, t.Name.Length)]} {m}", 100 * report.Adapter(t.Name, m).Accuracy));
        Save(Charts.Bars(perTask, "accuracy per task, each adapter alone", "accuracy %", width: 960), "accuracy-per-task.png");

        if (report.Masks.Count > 0)
        {
            var projs = report.Masks[0].Projections;
            int rows = report.Masks.Sum(m => m.Layers.Length);
            var grid = new double[rows, projs.Length];
            var labels = new List<string>();
            int row = 0;
            foreach (var m in report.Masks)
                for (int i = 0; i < m.Layers.Length; i++, row++)
                {
                    labels.Add($"{m.Task} L{m.Layers[i]}");
                    for (int j = 0; j < projs.Length; j++) grid[row, j] = m.Grid[i, j];
                }
            double max = 0;
            foreach (var v in grid) if (double.IsFinite(v)) max = Math.Max(max, v);
            Save(Charts.Heatmap(grid, labels, projs, $"LoRI mask density per layer ({100 * (1 - report.Sparsity):0}% kept globally)",
                0, Math.Max(max, 1e-6), "kept fraction"), "mask-density.png");
        }
    }

    private static Series Curve(string name, IReadOnlyList<double> y) => new(name, y.Select((v, i) => ((double)(i + 1), v)).ToList());
}

using System.Text.Json;
using LoRI.Evaluation;
using LoRI.IO;
using LoRI.Training.Data;

namespace LoRI.Runner.Verbs;

/// <summary>`eval`: the reference's answer extraction (choice, GSM8K), exact match, or perplexity; greedy, batched; a JSON report.</summary>
public static class EvalVerb
{
    public static readonly Verb Verb = new("eval", "evaluate a model (and adapters) on a JSONL set: choice, gsm8k, exact or perplexity",
        "eval --model DIR " + Session.AdapterUsage + " --data FILE --metric choice|gsm8k|exact|perplexity [--task NAME] " +
        "[--template auto|alpaca|alpaca-nlu-test-reference|gsm8k|chat|raw] [--max-new-tokens 512] [--batch-size 8] [--limit N] " +
        "[--bos] [--max-length 512] [--decode device|host] [--report FILE] [--json] " + Session.DeviceUsage, Run);

    private static int Run(Args a)
    {
        var dataPath = a.Require("data");
        var metric = (a.Require("metric")) switch
        {
            "choice" => EvalMetric.Choice,
            "gsm8k" => EvalMetric.Gsm8k,
            "exact" => EvalMetric.Exact,
            "perplexity" => EvalMetric.Perplexity,
            var other => throw new UsageException($"--metric: expected choice, gsm8k, exact or perplexity, found '{other}'"),
        };
        var task = a.Get("task");
        TemplateKind template;
        try { template = PromptTemplates.ParseKind(a.Get("template") ?? "auto"); }
        catch (ArgumentException e) { throw new UsageException($"--template: {e.Message}"); }
        int maxNew = a.GetInt("max-new-tokens", 512), batch = a.GetInt("batch-size", 8), limit = a.GetInt("limit", 0);
        int maxLen = a.GetInt("max-length", 512);
        bool bos = a.Flag("bos"), json = a.Flag("json");
        bool deviceDecode = GenerateVerb.ParseDecode(a.Get("decode"));
        var reportPath = a.Get("report");
        using var s = Session.Open(a, maxTokensPerForward: 512);
        a.EnsureAllUsed();

        LabelSet? labels = null;
        if (task is not null)
        {
            try { labels = LabelSet.ForTask(task); }
            catch (ArgumentException e) { throw new UsageException($"--task: {e.Message}"); }
        }
        var records = JsonlReader.ReadFile(dataPath);
        if (limit > 0 && records.Count > limit) records = records.GetRange(0, limit);

        // Session.Open attached the --adapter folders (unmerged, or merged into the weights with --merge, as the reference evaluates).
        EvalReport report;
        if (metric == EvalMetric.Perplexity)
        {
            var opts = new ExampleOptions
            {
                MaxLength = maxLen, PromptCut = maxLen / 2, ResponseCut = maxLen / 2, AddBos = bos,
                BosId = s.Model.Config.BosTokenId ?? s.Tokenizer.BosId ?? 0, EosId = s.EosIds[0],
            };
            var examples = ExampleBuilder.BuildAll(records, template, t => s.Tokenizer.Encode(t, addBos: false, parseSpecial: true), opts);
            report = Evaluator.Perplexity(s.Model, examples);
        }
        else
        {
            int? bosId = bos ? s.Model.Config.BosTokenId ?? s.Tokenizer.BosId : null;
            report = Evaluator.Generate(s.Model, records, metric, template, t => s.Tokenizer.Encode(t, addBos: false, parseSpecial: true),
                ids => s.Tokenizer.Decode(ids, skipSpecial: true), s.EosIds, deviceDecode, maxNew, batch, labels, bosId);
            if (Program.Verbose && report.Decode is { } d) Console.Error.WriteLine($"{d} on {s.Device}");
        }
        if (reportPath is not null)
        {
            var buf = new MemoryStream();
            using (var w = new Utf8JsonWriter(buf, new JsonWriterOptions { Indented = true })) report.WriteJson(w);
            AtomicFile.Write(reportPath, buf.ToArray());
        }
        if (json)
        {
            var buf = new MemoryStream();
            using (var w = new Utf8JsonWriter(buf, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
                report.WriteJson(w);
            Console.Out.WriteLine(Session.Utf8.GetString(buf.ToArray()));
        }
        else if (metric == EvalMetric.Perplexity)
            Console.Out.WriteLine($"perplexity {report.Perplexity:F4} (mean NLL {report.MeanNll:F4} over {report.Tokens} response tokens of {report.Examples} examples)");
        else
            Console.Out.WriteLine($"{metric.ToString().ToLowerInvariant()}: {report.Correct}/{report.Examples} correct, accuracy {100 * report.Accuracy:F2}%");
        return 0;
    }
}

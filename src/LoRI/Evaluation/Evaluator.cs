using System.Text.Json;
using LoRI.Generation;
using LoRI.Model;
using LoRI.Training.Data;

namespace LoRI.Evaluation;

public enum EvalMetric { Choice, Gsm8k, Exact, Perplexity }

/// <summary>One evaluated example.</summary>
public sealed record EvalItem(int Line, string Prediction, string Gold, bool Correct);

/// <summary>The result of an evaluation: accuracy for the generation metrics, NLL and perplexity for perplexity.</summary>
public sealed record EvalReport(EvalMetric Metric, int Examples, int Correct, double Accuracy, long Tokens, double MeanNll,
                                double Perplexity, IReadOnlyList<EvalItem> Items)
{
    /// <summary>How the generation metrics decoded (host or device path, graph replays), summed over the batches; null for perplexity.</summary>
    public DecodeStats? Decode { get; init; }

    public void WriteJson(Utf8JsonWriter w, bool withItems = true)
    {
        w.WriteStartObject();
        w.WriteString("metric", Metric.ToString().ToLowerInvariant());
        w.WriteNumber("examples", Examples);
        if (Metric == EvalMetric.Perplexity)
        {
            w.WriteNumber("tokens", Tokens);
            w.WriteNumber("mean_nll", MeanNll);
            w.WriteNumber("perplexity", Perplexity);
        }
        else
        {
            w.WriteNumber("correct", Correct);
            w.WriteNumber("accuracy", Accuracy);
        }
        if (Decode is { } d)
        {
            w.WriteStartObject("decode");
            w.WriteString("path", d.Path);
            w.WriteNumber("steps", d.Steps);
            w.WriteNumber("graph_replays", d.GraphReplays);
            w.WriteNumber("graph_captures", d.GraphCaptures);
            w.WriteNumber("launches_per_step", d.LaunchesPerStep);
            w.WriteEndObject();
        }
        if (withItems && Items.Count > 0)
        {
            w.WriteStartArray("items");
            foreach (var it in Items)
            {
                w.WriteStartObject();
                w.WriteNumber("line", it.Line);
                w.WriteString("prediction", it.Prediction);
                w.WriteString("gold", it.Gold);
                w.WriteBoolean("correct", it.Correct);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }
}

/// <summary>
/// The reference's evaluation (lori-method.md section 5) on a LlamaModel with whatever adapters are attached
/// to it: greedy decoding in batches, then the answer extraction of AnswerExtraction; or the perplexity of the
/// response tokens given their prompts.
/// </summary>
public static class Evaluator
{
    public static EvalReport Generate(LlamaModel model, IReadOnlyList<DataRecord> records, EvalMetric metric, TemplateKind template,
                                      Func<string, int[]> encode, Func<int[], string> decode, IReadOnlyList<int> stopIds,
                                      int maxNewTokens = 512, int batchSize = 8, LabelSet? labels = null, int? bosId = null)
        => Generate(model, records, metric, template, encode, decode, stopIds, deviceDecode: true, maxNewTokens, batchSize, labels, bosId);

    /// <summary>
    /// <see cref="Generate(LlamaModel, IReadOnlyList{DataRecord}, EvalMetric, TemplateKind, Func{string, int[]}, Func{int[], string}, IReadOnlyList{int}, int, int, LabelSet?, int?)"/>
    /// with the choice of decode path: <paramref name="deviceDecode"/> false forces the host path (Generator.UseDeviceDecoder).
    /// </summary>
    public static EvalReport Generate(LlamaModel model, IReadOnlyList<DataRecord> records, EvalMetric metric, TemplateKind template,
                                      Func<string, int[]> encode, Func<int[], string> decode, IReadOnlyList<int> stopIds, bool deviceDecode,
                                      int maxNewTokens = 512, int batchSize = 8, LabelSet? labels = null, int? bosId = null)
    {
        if (metric == EvalMetric.Perplexity) throw new ArgumentException("perplexity is not a generation metric");
        var rendered = records.Select(r => (Record: r, Pt: PromptTemplates.Render(r, template))).ToList();
        if (metric == EvalMetric.Choice)
            labels ??= LabelSet.FromGold(rendered[0].Pt.Target)
                ?? throw new ArgumentException($"line {rendered[0].Record.Line}: the gold answer '{rendered[0].Pt.Target}' holds no known label; name the task");
        var items = new List<EvalItem>();
        int longest = 0;
        var prompts = rendered.Select(r =>
        {
            var ids = encode(r.Pt.Prompt);
            if (bosId is int b) ids = [b, .. ids];
            longest = Math.Max(longest, ids.Length);
            return ids;
        }).ToList();
        int batch = Math.Min(batchSize, Math.Min(model.MaxOutputsPerForward, prompts.Count));
        using var gen = new Generator(model, batch, Math.Min(model.Config.MaxPositionEmbeddings, longest + maxNewTokens)) { UseDeviceDecoder = deviceDecode };
        DecodeStats? total = null;
        var opts = new GenerationOptions { MaxNewTokens = maxNewTokens, StopIds = stopIds.ToArray() };
        for (int start = 0; start < prompts.Count; start += batch)
        {
            int count = Math.Min(batch, prompts.Count - start);
            var results = gen.Generate(prompts.GetRange(start, count), opts);
            var st = gen.LastStats;
            total = total is { } t
                ? t with { Steps = t.Steps + st.Steps, GraphReplays = t.GraphReplays + st.GraphReplays, GraphCaptures = t.GraphCaptures + st.GraphCaptures,
                           LaunchesPerStep = st.LaunchesPerStep >= 0 ? st.LaunchesPerStep : t.LaunchesPerStep }
                : st;
            for (int i = 0; i < count; i++)
            {
                var (rec, pt) = rendered[start + i];
                var text = decode(results[i].Tokens.Where(t => !stopIds.Contains(t)).ToArray());
                string pred; bool ok;
                switch (metric)
                {
                    case EvalMetric.Choice:
                        // The reference decodes prompt and generation together, then looks after the last "### Response:".
                        pred = AnswerExtraction.ExtractChoice(pt.Prompt + text, labels!) ?? "";
                        ok = AnswerExtraction.ChoiceCorrect(pt.Prompt + text, pt.Target, labels!);
                        break;
                    case EvalMetric.Gsm8k:
                        pred = AnswerExtraction.ExtractNumber(text)?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "";
                        ok = AnswerExtraction.Gsm8kCorrect(text, pt.Target);
                        break;
                    default:
                        pred = text;
                        ok = AnswerExtraction.ExactMatch(text, pt.Target);
                        break;
                }
                items.Add(new EvalItem(rec.Line, pred, pt.Target, ok));
            }
        }
        int correct = items.Count(i => i.Correct);
        return new EvalReport(metric, items.Count, correct, items.Count == 0 ? 0 : (double)correct / items.Count, 0, 0, 0, items) { Decode = total };
    }

    /// <summary>
    /// Perplexity of each example's response tokens (those after PromptLength) given everything before them,
    /// through LlamaModel.Forward (so attached adapters apply): exp(mean NLL over all response tokens).
    /// </summary>
    public static EvalReport Perplexity(LlamaModel model, IReadOnlyList<TrainingExample> examples)
    {
        int v = model.Config.VocabSize;
        int chunk = Math.Min(model.MaxTokensPerForward, model.MaxOutputsPerForward);
        int maxLen = examples.Max(e => e.Tokens.Length);
        using var cache = new KvCache(model.Backend, model.Config, 1, maxLen);
        var logits = new float[chunk * v];
        var slots = new int[chunk];
        var pos = new int[chunk];
        var rows = new int[chunk];
        for (int i = 0; i < chunk; i++) rows[i] = i;
        double nll = 0;
        long tokens = 0;
        foreach (var e in examples)
        {
            for (int s = 0; s < e.Tokens.Length - 1; s += chunk)
            {
                int n = Math.Min(chunk, e.Tokens.Length - 1 - s);
                for (int i = 0; i < n; i++) pos[i] = s + i;
                model.Forward(e.Tokens.AsSpan(s, n), slots.AsSpan(0, n), pos.AsSpan(0, n), rows.AsSpan(0, n), cache, logits.AsSpan(0, n * v));
                for (int i = 0; i < n; i++)
                {
                    int t = s + i + 1;
                    if (t < e.PromptLength) continue;
                    var row = logits.AsSpan(i * v, v);
                    double max = double.NegativeInfinity;
                    foreach (var x in row) max = Math.Max(max, x);
                    double sum = 0;
                    foreach (var x in row) sum += Math.Exp(x - max);
                    nll += max + Math.Log(sum) - row[e.Tokens[t]];
                    tokens++;
                }
            }
        }
        double mean = tokens == 0 ? 0 : nll / tokens;
        return new EvalReport(EvalMetric.Perplexity, examples.Count, 0, 0, tokens, mean, Math.Exp(mean), []);
    }
}

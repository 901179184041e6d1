using LoRI.Model;

namespace LoRI.Runner.Verbs;

/// <summary>
/// `score`: the log-probability of each token given the ones before it (perplexity, choice scoring), the top-K
/// alternatives, and optionally every position's full logits as little-endian float32 [tokens, vocab].
/// </summary>
public static class ScoreVerb
{
    public static readonly Verb Verb = new("score", "log-probability of each token of a text, and its top alternatives",
        "score --model DIR (--text TEXT | --ids 1,2,3) [--bos] [--top K] [--json] [--dump-logits FILE] " + Session.AdapterUsage + " " + Session.DeviceUsage, Run);

    private static int Run(Args a)
    {
        var text = a.Get("text");
        var idsArg = a.Get("ids");
        if ((text is null) == (idsArg is null)) throw new UsageException("give exactly one of --text and --ids");
        bool bos = a.Flag("bos"), json = a.Flag("json");
        int top = a.GetInt("top", 0);
        if (top < 0) throw new UsageException("--top must be >= 0");
        var dump = a.Get("dump-logits");

        using var s = Session.Open(a);
        a.EnsureAllUsed();
        int[] ids = idsArg is not null ? Session.ParseIds(idsArg, "ids") : s.Tokenizer.Encode(text!, addBos: bos && s.Tokenizer.BosId is not null);
        if (idsArg is not null && bos && s.Tokenizer.BosId is int b) ids = [b, .. ids];
        int v = s.Model.Config.VocabSize;
        foreach (var id in ids)
            if ((uint)id >= (uint)v) throw new UsageException($"token id {id} is outside the vocabulary [0, {v})");
        if (ids.Length > s.Model.Config.MaxPositionEmbeddings)
            throw new UsageException($"{ids.Length} tokens exceed the model's {s.Model.Config.MaxPositionEmbeddings} positions");

        var scores = Score(s.Model, ids, top, dump);

        if (json)
        {
            Session.WriteJson(w =>
            {
                w.WriteString("device", s.Device);
                Session.WriteIds(w, "ids", ids);
                w.WriteStartArray("tokens");
                for (int i = 0; i < ids.Length; i++)
                {
                    w.WriteStartObject();
                    w.WriteNumber("id", ids[i]);
                    w.WriteString("token", s.Tokenizer.Decode([ids[i]]));
                    if (i > 0) w.WriteNumber("logprob", scores.LogProbs[i]);
                    else w.WriteNull("logprob");
                    w.WriteStartArray("top");
                    foreach (var (id, lp) in scores.Top[i])
                    {
                        w.WriteStartObject();
                        w.WriteNumber("id", id);
                        w.WriteString("token", s.Tokenizer.Decode([id]));
                        w.WriteNumber("logprob", lp);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteNumber("total_logprob", scores.Total);
                w.WriteNumber("scored_tokens", ids.Length - 1);
                w.WriteNumber("perplexity", scores.Perplexity);
            });
        }
        else
        {
            var o = Console.Out;
            for (int i = 0; i < ids.Length; i++)
            {
                var tokText = s.Tokenizer.Decode([ids[i]]).Replace("\n", "\\n");
                o.Write(i == 0 ? $"{i,5} {ids[i],7} {"",10}  {tokText}" : $"{i,5} {ids[i],7} {scores.LogProbs[i],10:F4}  {tokText}");
                if (top > 0)
                    o.Write("   top: " + string.Join(", ", scores.Top[i].Select(t => $"{s.Tokenizer.Decode([t.Id]).Replace("\n", "\\n")}={t.LogProb:F3}")));
                o.WriteLine();
            }
            o.WriteLine($"total logprob {scores.Total:F4} over {ids.Length - 1} tokens, perplexity {scores.Perplexity:F4}");
        }
        return 0;
    }

    public sealed record Scores(double[] LogProbs, (int Id, double LogProb)[][] Top, double Total, double Perplexity);

    /// <summary>
    /// Runs the model over ids (in chunks of the forward's output capacity) and returns, for each position i >= 1,
    /// log p(ids[i] | ids[..i]); Top[i] lists the K most likely tokens at position i (predicted from i-1; Top[0] is
    /// empty). With dumpPath, every position's logits are written as float32 [tokens, vocab].
    /// </summary>
    public static Scores Score(LlamaModel m, int[] ids, int top, string? dumpPath)
    {
        int v = m.Config.VocabSize, n = ids.Length, chunk = m.MaxOutputsPerForward;
        using var cache = new KvCache(m.Backend, m.Config, 1, n);
        var logits = new float[chunk * v];
        var lp = new double[n];
        var tops = new (int, double)[n][];
        tops[0] = [];
        var slots = new int[chunk];
        var pos = new int[chunk];
        var rows = Enumerable.Range(0, chunk).ToArray();
        string? tmp = dumpPath is null ? null : dumpPath + ".tmp";
        using (var dump = tmp is null ? null : new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            for (int start = 0; start < n; start += chunk)
            {
                int len = Math.Min(chunk, n - start);
                for (int j = 0; j < len; j++) pos[j] = start + j;
                m.Forward(ids.AsSpan(start, len), slots.AsSpan(0, len), pos.AsSpan(0, len), rows.AsSpan(0, len), cache, logits.AsSpan(0, len * v));
                dump?.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(logits.AsSpan(0, len * v)));
                for (int j = 0; j < len; j++)
                {
                    int i = start + j;
                    if (i + 1 >= n) break;
                    var row = logits.AsSpan(j * v, v);
                    double lse = LogSumExp(row);
                    lp[i + 1] = row[ids[i + 1]] - lse;
                    tops[i + 1] = TopK(row, top, lse);
                }
            }
        }
        if (tmp is not null) File.Move(tmp, dumpPath!, overwrite: true);
        double total = lp.Skip(1).Sum();
        double ppl = n > 1 ? Math.Exp(-total / (n - 1)) : double.NaN;
        return new Scores(lp, tops, total, ppl);
    }

    private static double LogSumExp(ReadOnlySpan<float> row)
    {
        float max = float.NegativeInfinity;
        foreach (var x in row) if (x > max) max = x;
        double s = 0;
        foreach (var x in row) s += Math.Exp(x - max);
        return max + Math.Log(s);
    }

    private static (int, double)[] TopK(ReadOnlySpan<float> row, int k, double lse)
    {
        if (k == 0) return [];
        k = Math.Min(k, row.Length);
        var best = new List<(int Id, double LogProb)>(k + 1);
        for (int i = 0; i < row.Length; i++)
        {
            if (best.Count == k && row[i] <= best[^1].LogProb + lse) continue;
            double l = row[i] - lse;
            int at = best.FindIndex(b => b.LogProb < l);
            if (at < 0) at = best.Count;
            best.Insert(at, (i, l));
            if (best.Count > k) best.RemoveAt(k);
        }
        return best.ToArray();
    }
}

using LoRI.Model;

namespace LoRI.Adapters;

public enum MergeMethod { Cat, Linear }

/// <summary>
/// Combining several adapters into one PEFT adapter (peft's add_weighted_adapter; method doc section 6), with
/// s_i = the module's scale of adapter i and w_i the user weight:
///  - cat:    rank R = sum r_i, lora_alpha = R (scale 1); A = rows(w_i s_i A_i) [R, in], B = cols(B_i) [out, R],
///            so dW = sum_i w_i s_i B_i A_i exactly.
///  - linear: equal ranks r, lora_alpha = r (scale 1); c_i = sqrt(w_i s_i); A = sum c_i A_i, B = sum c_i B_i,
///            so dW = sum_i w_i s_i B_i A_i + sum_{i != j} c_i c_j B_i A_j (the cross terms).
/// Modules are the union over the adapters; an adapter without a module contributes zero blocks (cat) or
/// nothing (linear). Per-module ranks differing from the common one are written as rank_pattern/alpha_pattern.
/// </summary>
public static class AdapterMerge
{
    public static LoraAdapter Merge(IReadOnlyList<(LoraAdapter Adapter, float Weight)> adapters, MergeMethod method) =>
        method == MergeMethod.Cat ? Cat(adapters) : Linear(adapters);

    private static List<(int Layer, Proj Proj)> Keys(IReadOnlyList<(LoraAdapter Adapter, float Weight)> adapters)
    {
        if (adapters.Count == 0) throw new ArgumentException("no adapters to merge");
        return adapters.SelectMany(a => a.Adapter.Modules.Select(m => (m.Layer, m.Proj))).Distinct().Order().ToList();
    }

    private static (int In, int Out) Dims(IReadOnlyList<(LoraAdapter Adapter, float Weight)> adapters, int layer, Proj p)
    {
        (int In, int Out)? dims = null;
        foreach (var (a, _) in adapters)
            if (a[layer, p] is { } m)
            {
                if (dims is { } d && (d.In != m.In || d.Out != m.Out))
                    throw new ShapeMismatchException($"{m.Name()}: adapters disagree on its shape ([{d.Out}, {d.In}] vs [{m.Out}, {m.In}])");
                dims = (m.In, m.Out);
            }
        return dims!.Value;
    }

    public static LoraAdapter Cat(IReadOnlyList<(LoraAdapter Adapter, float Weight)> adapters)
    {
        var modules = new List<LoraModule>();
        foreach (var (l, p) in Keys(adapters))
        {
            var (inDim, outDim) = Dims(adapters, l, p);
            int rank = 0;
            foreach (var (a, _) in adapters) rank += a[l, p]?.Rank ?? a.Config.RankFor(l, p);
            var A = new float[(long)rank * inDim];
            var B = new float[(long)outDim * rank];
            int r0 = 0;
            foreach (var (a, w) in adapters)
            {
                var m = a[l, p];
                int ri = m?.Rank ?? a.Config.RankFor(l, p);
                if (m is not null)
                {
                    float c = w * m.Scale;
                    for (int k = 0; k < m.A.Length; k++) A[(long)r0 * inDim + k] = c * m.A[k];
                    for (int o = 0; o < outDim; o++)
                        Array.Copy(m.B, (long)o * ri, B, (long)o * rank + r0, ri);
                }
                r0 += ri;
            }
            modules.Add(new LoraModule(l, p, rank, inDim, outDim, rank, false, A, B));
        }
        return Build(adapters, modules);
    }

    public static LoraAdapter Linear(IReadOnlyList<(LoraAdapter Adapter, float Weight)> adapters)
    {
        var modules = new List<LoraModule>();
        foreach (var (l, p) in Keys(adapters))
        {
            var (inDim, outDim) = Dims(adapters, l, p);
            var present = adapters.Where(x => x.Adapter[l, p] is not null).Select(x => (M: x.Adapter[l, p]!, x.Weight)).ToList();
            int rank = present[0].M.Rank;
            foreach (var (m, _) in present)
                if (m.Rank != rank)
                    throw new ShapeMismatchException($"linear merge needs equal ranks: {m.Name()} has rank {m.Rank} in one adapter and {rank} in another (use cat)");
            var A = new float[(long)rank * inDim];
            var B = new float[(long)outDim * rank];
            foreach (var (m, w) in present)
            {
                double ws = (double)w * m.Scale;
                if (ws < 0)
                    throw new ArgumentException($"linear merge takes sqrt(w * s): weight {w} with scale {m.Scale} is negative for {m.Name()} (use cat)");
                float c = (float)Math.Sqrt(ws);
                for (int k = 0; k < A.Length; k++) A[k] += c * m.A[k];
                for (int k = 0; k < B.Length; k++) B[k] += c * m.B[k];
            }
            modules.Add(new LoraModule(l, p, rank, inDim, outDim, rank, false, A, B));
        }
        return Build(adapters, modules);
    }

    private static LoraAdapter Build(IReadOnlyList<(LoraAdapter Adapter, float Weight)> adapters, List<LoraModule> modules)
    {
        var config = LoraConfig.Describe(modules.Select(m => (m.Layer, m.Proj, m.Rank, m.Alpha)), false,
            adapters[0].Adapter.Config.BaseModelName, adapters[0].Adapter.Config.LoraDropout);
        return new LoraAdapter(config, modules);
    }
}

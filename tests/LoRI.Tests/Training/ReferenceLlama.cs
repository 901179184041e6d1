using LoRI.Model;
using LoRI.Training.Data;

namespace LoRI.Tests.Training;

/// <summary>
/// The whole Llama training loss in double precision, composed from ReferenceOps: the oracle for the
/// whole-model gradient tests. Weights by HF name (doubles); adapter modules by "layer/proj" with A, B.
/// </summary>
internal sealed class ReferenceLlama
{
    public required LlamaConfig Config { get; init; }
    public required Dictionary<string, double[]> W { get; init; }
    public Dictionary<(int, Proj), (double[] A, double[] B)> Adapter { get; } = new();
    public double Scale { get; init; }
    public int Rank { get; init; }

    public static Dictionary<string, double[]> FromNamed(IEnumerable<NamedTensor> tensors) =>
        tensors.ToDictionary(t => t.Name, t =>
        {
            var f = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.Data.AsSpan());
            var d = new double[f.Length];
            for (int i = 0; i < d.Length; i++) d[i] = f[i];
            return d;
        });

    private double[] Lin(double[] x, int l, Proj p)
    {
        var (o, i) = p.Shape(Config);
        var w = W[p.HfPrefix(l) + ".weight"];
        return Adapter.TryGetValue((l, p), out var ab)
            ? ReferenceOps.LoraLinear(x, w, ab.A, ab.B, i, o, Rank, Scale)
            : ReferenceOps.Linear(x, w, i, o);
    }

    public double Loss(Batch b)
    {
        var c = Config;
        int D = c.HiddenSize;
        var inv = c.RopeInvFreq().Select(v => (double)v).ToArray();
        var x = ReferenceOps.Embedding(W["model.embed_tokens.weight"], b.Tokens, D);
        for (int l = 0; l < c.NumLayers; l++)
        {
            var xn = ReferenceOps.RmsNorm(x, W[$"model.layers.{l}.input_layernorm.weight"], D, c.RmsNormEps);
            var q = ReferenceOps.Rope(Lin(xn, l, Proj.Q), c.NumHeads, c.HeadDim, b.Positions, inv);
            var k = ReferenceOps.Rope(Lin(xn, l, Proj.K), c.NumKvHeads, c.HeadDim, b.Positions, inv);
            var v = Lin(xn, l, Proj.V);
            var att = ReferenceOps.Attention(q, k, v, b.Size, b.SeqLen, c.NumHeads, c.NumKvHeads, c.HeadDim).Y;
            var o = Lin(att, l, Proj.O);
            var mid = x.Zip(o, (a, bb) => a + bb).ToArray();
            var xn2 = ReferenceOps.RmsNorm(mid, W[$"model.layers.{l}.post_attention_layernorm.weight"], D, c.RmsNormEps);
            var act = ReferenceOps.SwiGlu(Lin(xn2, l, Proj.Gate), Lin(xn2, l, Proj.Up));
            var down = Lin(act, l, Proj.Down);
            x = mid.Zip(down, (a, bb) => a + bb).ToArray();
        }
        var h = ReferenceOps.RmsNorm(x, W["model.norm.weight"], D, c.RmsNormEps);
        var head = c.TieWordEmbeddings ? W["model.embed_tokens.weight"] : W["lm_head.weight"];
        var nll = ReferenceOps.CrossEntropy(h, head, D, b.Targets);
        double loss = 0;
        for (int i = 0; i < nll.Length; i++) loss += b.Weights[i] * nll[i];
        return loss;
    }
}

using LoRI.Model;
using LoRI.Tensors;

namespace LoRI.Runner.Verbs;

/// <summary>`init-model`: a random-initialised Llama-3-architecture model in HF layout.</summary>
public static class InitModelVerb
{
    public static readonly Verb Verb = new("init-model", "write a random Llama-3-architecture model (tiny or small) in HF layout",
        "init-model --preset tiny|small --out DIR [--seed S] [--dtype f32|f16|bf16]", Run);

    private static int Run(Args a)
    {
        var preset = a.Require("preset");
        if (!Presets.Names.Contains(preset)) throw new UsageException($"--preset: expected {string.Join(" or ", Presets.Names)}, found '{preset}'");
        var outDir = a.Require("out");
        ulong seed = (ulong)a.GetLong("seed", 0);
        var dtArg = a.Get("dtype");
        DType? dtype;
        try { dtype = dtArg is null ? null : DTypes.ParseFloat(dtArg); }
        catch (ArgumentException e) { throw new UsageException("--dtype: " + e.Message); }
        a.EnsureAllUsed();
        var c = InitModel.Write(outDir, preset, seed, dtype);
        Console.WriteLine($"wrote {preset} model to {outDir}: {c.ParameterCount:N0} parameters ({c.TorchDtype}), " +
                          $"{c.NumLayers} layers, hidden {c.HiddenSize}, heads {c.NumHeads}/{c.NumKvHeads}, vocab {c.VocabSize}");
        return 0;
    }
}

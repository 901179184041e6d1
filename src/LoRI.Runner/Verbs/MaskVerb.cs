using System.Globalization;
using LoRI.Adapters;

namespace LoRI.Runner.Verbs;

/// <summary>`mask`: a LoRI sparsity mask from an adapter's B magnitudes (one global threshold by default).</summary>
public static class MaskVerb
{
    public static readonly Verb Verb = new("mask", "extract a LoRI sparsity mask from an adapter's B (safetensors, density table, PNG)",
        "mask --adapter DIR --sparsity 0.9 [--scope global|layer|module|matrix] --out FILE [--plot FILE.png]", Run);

    private static int Run(Args a)
    {
        var dir = a.Require("adapter");
        var s = a.Require("sparsity");
        // Parsed as a double, as the reference's Python float: k = floor((1 - sparsity) * N) depends on it.
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double sparsity) || !(sparsity >= 0 && sparsity <= 1))
            throw new UsageException($"--sparsity: expected a number from 0 to 1, found '{s}'");
        var scope = (a.Get("scope") ?? "global") switch
        {
            "global" => MaskScope.Global, "layer" => MaskScope.Layer, "module" => MaskScope.Module, "matrix" => MaskScope.Matrix,
            var x => throw new UsageException($"--scope: expected global, layer, module or matrix, found '{x}'"),
        };
        var outPath = a.Require("out");
        var plot = a.Get("plot");
        a.EnsureAllUsed();

        var adapter = PeftAdapter.Load(dir);
        var mask = LoraMask.Compute(adapter, sparsity, scope);
        mask.Save(outPath);
        var o = Console.Out;
        o.WriteLine($"mask         {outPath}");
        o.WriteLine($"scope        {scope.ToString().ToLowerInvariant()}, sparsity {sparsity.ToString(CultureInfo.InvariantCulture)}");
        o.WriteLine($"kept         {mask.Kept:N0} of {mask.Total:N0} B elements ({100 * mask.Density:F2}%)");
        if (scope == MaskScope.Global)
        {
            var (_, n, k, threshold) = mask.Thresholds[0];
            o.WriteLine($"threshold    |B| >= {threshold:G9} (k = floor((1 - sparsity) * {n:N0}) = {k:N0}; ties kept)");
        }
        o.WriteLine();
        o.Write(mask.DensityTable());
        if (plot is not null)
        {
            mask.DensityPlot($"MASK DENSITY, {scope.ToString().ToUpperInvariant()} {sparsity.ToString(CultureInfo.InvariantCulture)}").SavePng(plot);
            o.WriteLine($"plot         {plot}");
        }
        return 0;
    }
}

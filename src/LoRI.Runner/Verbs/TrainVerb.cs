using System.Globalization;
using LoRI.Adapters;
using LoRI.Model;
using LoRI.Training;
using LoRI.Training.Data;

namespace LoRI.Runner.Verbs;

/// <summary>`train`: LoRA / LoRI-D / LoRI-S / full fine-tuning from a JSONL file, with checkpoints and resume.</summary>
public static class TrainVerb
{
    public static readonly Verb Verb = new("train", "fine-tune: lora, lori-d, lori-s (masked) or full, with checkpoints",
        "train --model DIR --data FILE --method lora|lori-d|lori-s|full --out DIR [--rank 64] [--alpha 2*rank] " +
        "[--targets q,k,v,o,gate,up,down] [--lr 5e-5] [--epochs 1] [--batch-size 32] [--grad-accum 1] [--max-length 512] " +
        "[--mask FILE] [--init-adapter DIR] [--apply-mask] [--a-init uniform|gaussian] [--seed 42] " +
        "[--template auto|alpaca|gsm8k|chat|raw] [--bos] [--reduction sum|mean] [--clip per-tensor|global|none] [--max-grad-norm 1] " +
        "[--schedule constant|warmup|linear|cosine] [--warmup N] [--weight-decay 0] [--checkpoint-every N] [--max-steps N] " +
        "[--resume] [--json] [--quiet] " + Session.DeviceUsage, Run);

    internal static double GetDouble(Args a, string name, double fallback)
    {
        var s = a.Get(name);
        if (s is null) return fallback;
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v))
            throw new UsageException($"--{name}: expected a number, found '{s}'");
        return v;
    }

    private static T Parse<T>(Func<T> f, string option)
    {
        try { return f(); }
        catch (ArgumentException e) { throw new UsageException($"--{option}: {e.Message}"); }
    }

    private static int Run(Args a)
    {
        var modelDir = a.Require("model");
        var dataPath = a.Require("data");
        var outDir = a.Require("out");
        var method = Parse(() => TrainMethods.Parse(a.Require("method")), "method");
        int rank = a.GetInt("rank", 64);
        double alpha = GetDouble(a, "alpha", 2.0 * rank);
        var targets = Parse(() => LoriSetup.ParseTargets(a.Get("targets") ?? "q,k,v,o,gate,up,down"), "targets");
        double lr = GetDouble(a, "lr", 5e-5);
        int epochs = a.GetInt("epochs", 1), batch = a.GetInt("batch-size", 32), accum = a.GetInt("grad-accum", 1);
        int maxLen = a.GetInt("max-length", 512);
        var maskPath = a.Get("mask");
        var initAdapter = a.Get("init-adapter");
        bool applyMask = a.Flag("apply-mask");
        var aInit = Parse(() => TrainMethods.ParseAInit(a.Get("a-init") ?? "uniform"), "a-init");
        ulong seed = (ulong)a.GetLong("seed", 42);
        var template = Parse(() => PromptTemplates.ParseKind(a.Get("template") ?? "auto"), "template");
        bool bos = a.Flag("bos");
        var reduction = (a.Get("reduction") ?? "sum") switch
        {
            "sum" => LossReduction.SumTokensMeanSequences,
            "mean" => LossReduction.MeanTokens,
            var s => throw new UsageException($"--reduction: expected sum (per-sequence sum, batch mean: the reference) or mean (token mean), found '{s}'"),
        };
        var clip = (a.Get("clip") ?? "per-tensor") switch
        {
            "per-tensor" => ClipMode.PerTensor,
            "global" => ClipMode.Global,
            "none" => ClipMode.None,
            var s => throw new UsageException($"--clip: expected per-tensor, global or none, found '{s}'"),
        };
        float maxNorm = a.GetFloat("max-grad-norm", 1f);
        var schedule = Parse(() => LrSchedule.ParseKind(a.Get("schedule") ?? "constant"), "schedule");
        int warmup = a.GetInt("warmup", 0);
        double wd = GetDouble(a, "weight-decay", 0);
        int ckptEvery = a.GetInt("checkpoint-every", 0);
        long maxSteps = a.GetLong("max-steps", 0);
        bool resume = a.Flag("resume"), json = a.Flag("json"), quiet = a.Flag("quiet");
        var device = a.Get("device") ?? "auto";
        a.EnsureAllUsed();

        if (method == TrainMethod.LoriS && maskPath is null) throw new UsageException("--method lori-s needs --mask FILE (from the `mask` verb or a LoRI-D run)");
        if (method is TrainMethod.Lora or TrainMethod.Full && maskPath is not null) throw new UsageException($"--mask applies to lori-s and lori-d, not {method.Name()}");
        if (method == TrainMethod.Full && initAdapter is not null) throw new UsageException("--init-adapter applies to the adapter methods, not full");
        if (applyMask && (maskPath is null || initAdapter is null)) throw new UsageException("--apply-mask zeroes an --init-adapter's B outside --mask; give both");
        if (rank < 1 || maxLen < 2) throw new UsageException("--rank must be >= 1 and --max-length >= 2");

        using var backend = Session.CreateBackend(device);
        using var model = LlamaModel.Load(modelDir, backend);
        var tok = Text.LlamaTokenizer.Load(modelDir);
        int eos = model.Config.EosTokenIds.Length > 0 ? model.Config.EosTokenIds[0]
            : tok.EosIds.Count > 0 ? tok.EosIds[0] : throw new LoRIException($"{modelDir}: neither config nor tokenizer names an EOS token");
        var exOpts = new ExampleOptions
        {
            MaxLength = maxLen, PromptCut = maxLen / 2, ResponseCut = maxLen / 2, AddBos = bos,
            BosId = model.Config.BosTokenId ?? tok.BosId ?? 0, EosId = eos,
        };
        var records = JsonlReader.ReadFile(dataPath);
        var examples = ExampleBuilder.BuildAll(records, template, t => tok.Encode(t, addBos: false, parseSpecial: true), exOpts);
        if (examples.Count == 0) throw new LoRIException($"{dataPath}: no example has a response token left after truncation");

        LoraAdapter? adapter = null;
        if (initAdapter is not null)
        {
            adapter = PeftAdapter.Load(initAdapter, model.Config);
            if (method == TrainMethod.Lora) throw new UsageException("--init-adapter continues B with A frozen: use lori-d or lori-s");
        }
        var mask = maskPath is null ? null : LoraMask.Load(maskPath);
        if (applyMask) mask!.ApplyTo(adapter!);

        var opts = new TrainOptions
        {
            Method = method, Rank = rank, Alpha = alpha, Targets = targets, AInit = aInit, Lr = lr, Epochs = epochs,
            BatchSize = batch, GradAccum = accum, Seed = seed, Reduction = reduction, Clip = clip, MaxGradNorm = maxNorm,
            Schedule = schedule, WarmupSteps = warmup, Adam = new AdamWOptions { WeightDecay = wd }, PadId = eos,
        };
        using var trainer = new Trainer(model, examples, opts, outDir, adapter, mask);
        if (resume) trainer.LoadCheckpoint();
        long trainable = trainer.Graph.Params.Sum(p => p.Mask is null ? (long)p.Value.Length : p.Mask.Count(m => m));
        if (!quiet)
            Console.Error.WriteLine($"{method.Name()} on {backend.Name}: {examples.Count} examples, {trainer.StepsPerEpoch} steps/epoch x {epochs}, " +
                                    $"{trainable:N0} trainable parameters{(resume ? $", resuming at step {trainer.Step}" : "")}");
        StepInfo? last = null;
        trainer.Run(ckptEvery, maxSteps, s =>
        {
            last = s;
            if (!quiet) Progress(s);
        });
        if (!quiet) Console.Error.WriteLine();
        bool finished = trainer.Step == trainer.TotalSteps;
        if (finished)
        {
            trainer.SaveResult();
            if (method == TrainMethod.Full)
                foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "generation_config.json" })
                    if (File.Exists(Path.Combine(modelDir, f))) File.Copy(Path.Combine(modelDir, f), Path.Combine(outDir, f), overwrite: true);
        }
        if (json)
            Session.WriteJson(w =>
            {
                w.WriteString("method", method.Name());
                w.WriteString("device", backend.Name);
                w.WriteNumber("examples", examples.Count);
                w.WriteNumber("steps", trainer.Step);
                w.WriteNumber("total_steps", trainer.TotalSteps);
                w.WriteBoolean("finished", finished);
                w.WriteNumber("trainable_parameters", trainable);
                if (last is not null) w.WriteNumber("last_loss", last.Loss);
                w.WriteString("out", outDir);
            });
        else
            Console.Out.WriteLine(finished
                ? $"trained {trainer.Step} steps; {(method == TrainMethod.Full ? "model" : "adapter")} written to {outDir}"
                : $"stopped after step {trainer.Step} of {trainer.TotalSteps}; resume with --resume (checkpoint in {outDir})");
        return 0;
    }

    private static void Progress(StepInfo s)
    {
        const int width = 24;
        int fill = (int)(width * s.Step / Math.Max(1, s.TotalSteps));
        double perStep = s.ElapsedSeconds / Math.Max(1, s.Step);
        var eta = TimeSpan.FromSeconds(perStep * (s.TotalSteps - s.Step));
        Console.Error.Write($"\rstep {s.Step}/{s.TotalSteps} [{new string('=', fill)}{new string(' ', width - fill)}] " +
                            $"loss {s.Loss:F4} lr {s.Lr:G3} {s.TokensPerSecond:F0} tok/s ETA {eta:hh\\:mm\\:ss}   ");
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using LoRI.Adapters;
using LoRI.IO;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Training.Data;

namespace LoRI.Training;

/// <summary>Everything that decides a run's result. Defaults are the reference's (lori-method.md section 3) except lr and rank, which the caller sets.</summary>
public sealed record TrainOptions
{
    public TrainMethod Method { get; init; } = TrainMethod.LoriD;
    public int Rank { get; init; } = 64;
    public double Alpha { get; init; } = 128;
    public IReadOnlyList<Proj> Targets { get; init; } = Projs.All;
    public AInit AInit { get; init; } = AInit.Uniform;
    public double Lr { get; init; } = 5e-5;
    public int Epochs { get; init; } = 1;
    public int BatchSize { get; init; } = 32;
    public int GradAccum { get; init; } = 1;
    public ulong Seed { get; init; } = 42;
    public LossReduction Reduction { get; init; } = LossReduction.SumTokensMeanSequences;
    public ClipMode Clip { get; init; } = ClipMode.PerTensor;
    public float MaxGradNorm { get; init; } = 1f;
    public LrScheduleKind Schedule { get; init; } = LrScheduleKind.Constant;
    public int WarmupSteps { get; init; }
    public AdamWOptions Adam { get; init; } = new();
    public int PadId { get; init; }
    public bool DropLast { get; init; } = true;
    public bool CompactMaskedState { get; init; } = true;

    /// <summary>The options that must be equal for a checkpoint to be resumed.</summary>
    public string Fingerprint() => string.Join(";",
        Method.Name(), Rank, Alpha.ToString("R", CultureInfo.InvariantCulture), string.Join(",", Targets), AInit,
        Lr.ToString("R", CultureInfo.InvariantCulture), Epochs, BatchSize, GradAccum, Seed, Reduction, Clip,
        MaxGradNorm.ToString("R", CultureInfo.InvariantCulture), Schedule, WarmupSteps,
        Adam.Beta1.ToString("R", CultureInfo.InvariantCulture), Adam.Beta2.ToString("R", CultureInfo.InvariantCulture),
        Adam.Eps.ToString("R", CultureInfo.InvariantCulture), Adam.WeightDecay.ToString("R", CultureInfo.InvariantCulture),
        PadId, DropLast, CompactMaskedState);
}

/// <summary>One optimizer step's numbers, as metrics.jsonl records them.</summary>
public sealed record StepInfo(long Step, long TotalSteps, int Epoch, double Loss, double Lr, float GradNorm, int Tokens,
                              double TokensPerSecond, double ElapsedSeconds);

/// <summary>
/// The training loop: data order, micro-batches, optimizer steps, metrics.jsonl, checkpoints and resume.
///
/// Determinism: the data order of epoch e is a permutation drawn from (seed, e) alone, A is drawn from
/// (seed, module), dropout is off, and every kernel sums in a fixed order, so step k's result depends only on
/// the state after step k - 1. A checkpoint (one safetensors file, written to a temporary name and renamed)
/// holds that state exactly: the trained tensors, the frozen A, AdamW's moments and step count, and the step
/// number (which fixes the epoch and the batch). Resuming from it gives, bit for bit, what the uninterrupted run
/// gives; a run killed at any moment loses at most the steps since its last checkpoint.
/// </summary>
public sealed class Trainer : IDisposable
{
    public const string CheckpointFileName = "checkpoint.safetensors";
    public const string MetricsFileName = "metrics.jsonl";
    public const string LossCurveFileName = "loss-curve.png";

    private readonly LlamaModel _model;
    private readonly IReadOnlyList<TrainingExample> _examples;
    private readonly string _outDir;
    private readonly LoraMask? _mask;

    public TrainOptions Options { get; }
    public TrainingGraph Graph { get; }
    public LoraAdapter? Adapter { get; }
    public long StepsPerEpoch { get; }
    public long TotalSteps { get; }
    /// <summary>Optimizer steps done (after Run or LoadCheckpoint).</summary>
    public long Step { get; private set; }

    public Trainer(LlamaModel model, IReadOnlyList<TrainingExample> examples, TrainOptions o, string outDir,
                   LoraAdapter? adapter = null, LoraMask? mask = null)
    {
        if (o.BatchSize < 1 || o.GradAccum < 1 || o.Epochs < 1) throw new ArgumentException("batch size, gradient accumulation and epochs must be at least 1");
        if (examples.Count == 0) throw new ArgumentException("no training examples");
        _model = model;
        _examples = examples;
        _outDir = outDir;
        _mask = mask;
        Options = o;
        long batches = DataOrder.BatchesPerEpoch(examples.Count, o.BatchSize, o.DropLast);
        StepsPerEpoch = batches / o.GradAccum;
        if (StepsPerEpoch == 0)
            throw new ArgumentException($"{examples.Count} examples make no full step of {o.BatchSize} x {o.GradAccum} sequences");
        TotalSteps = StepsPerEpoch * o.Epochs;
        Adapter = o.Method == TrainMethod.Full ? null
            : adapter ?? LoriSetup.CreateAdapter(model.Config, o.Rank, o.Alpha, o.Targets, o.AInit, ASeed(o.Seed, o.Method));
        int maxLen = examples.Max(e => e.Tokens.Length);
        Graph = new TrainingGraph(model, o.Method, Adapter, o.BatchSize * maxLen, mask, o.CompactMaskedState);
    }

    /// <summary>
    /// The seed A is drawn from. LoRI-S draws a new A (the reference does not reuse LoRI-D's), so its stream is
    /// offset from the run seed: the same --seed for both stages still gives two independent A's.
    /// </summary>
    public static ulong ASeed(ulong seed, TrainMethod m) => m == TrainMethod.LoriS ? seed ^ 0x4C6F52492D530000UL : seed;

    private LrSchedule Schedule => new(Options.Schedule, Options.Lr, Options.WarmupSteps, (int)Math.Min(int.MaxValue, TotalSteps));

    /// <summary>
    /// Trains from the current Step to the end (or for at most maxSteps more steps, then checkpoints and
    /// returns). checkpointEvery &gt; 0 writes a checkpoint every that many steps; one is always written at the end.
    /// </summary>
    public void Run(int checkpointEvery = 0, long maxSteps = 0, Action<StepInfo>? onStep = null)
    {
        Directory.CreateDirectory(_outDir);
        var metricsPath = Path.Combine(_outDir, MetricsFileName);
        TrimMetrics(metricsPath, Step);
        using var metrics = new StreamWriter(metricsPath, append: true, new UTF8Encoding(false));
        var sched = Schedule;
        var clock = Stopwatch.StartNew();
        int[]? perm = null;
        int permEpoch = -1;
        long done = 0;
        var micro = new TrainingExample[Options.BatchSize];
        while (Step < TotalSteps && (maxSteps <= 0 || done < maxSteps))
        {
            int epoch = (int)(Step / StepsPerEpoch);
            long k = Step % StepsPerEpoch;
            if (epoch != permEpoch) { perm = DataOrder.EpochPermutation(_examples.Count, Options.Seed, epoch); permEpoch = epoch; }
            var t0 = clock.Elapsed.TotalSeconds;
            double loss = 0;
            int tokens = 0;
            for (int a = 0; a < Options.GradAccum; a++)
            {
                var idx = DataOrder.BatchIndices(perm!, Options.BatchSize, (int)(k * Options.GradAccum + a));
                for (int i = 0; i < idx.Length; i++) micro[i] = _examples[idx[i]];
                var batch = new Batch(micro.AsSpan(0, idx.Length).ToArray(), Options.PadId, Options.Reduction, 1f / Options.GradAccum);
                loss += Graph.Run(batch);
                tokens += batch.RealTokens;
            }
            double lr = sched.At(Step);
            float norm = Graph.OptimizerStep(lr, Options.Adam, Options.Clip, Options.MaxGradNorm);
            Step++;
            done++;
            double dt = clock.Elapsed.TotalSeconds - t0;
            var info = new StepInfo(Step, TotalSteps, epoch, loss, lr, norm, tokens, dt > 0 ? tokens / dt : 0, clock.Elapsed.TotalSeconds);
            WriteMetrics(metrics, info);
            onStep?.Invoke(info);
            if (checkpointEvery > 0 && Step % checkpointEvery == 0 && Step < TotalSteps) { metrics.Flush(); SaveCheckpoint(); }
        }
        metrics.Flush();
        SaveCheckpoint();
        metrics.Close();
        SaveLossCurve(metricsPath, Path.Combine(_outDir, LossCurveFileName));
    }

    /// <summary>Plots loss against step from a metrics.jsonl (every step of the run, resumed parts included) as a PNG.</summary>
    public static void SaveLossCurve(string metricsPath, string pngPath)
    {
        var points = new List<(double X, double Y)>();
        foreach (var line in File.ReadLines(metricsPath))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            using var d = JsonDocument.Parse(line);
            points.Add((d.RootElement.GetProperty("step").GetInt64(), d.RootElement.GetProperty("loss").GetDouble()));
        }
        if (points.Count == 0) return;
        Plotting.Charts.Lines([new Plotting.Series("loss", points)], "TRAINING LOSS", "step", "loss").SavePng(pngPath);
    }

    private static void WriteMetrics(StreamWriter w, StepInfo s)
    {
        var buf = new MemoryStream();
        using (var j = new Utf8JsonWriter(buf))
        {
            j.WriteStartObject();
            j.WriteNumber("step", s.Step);
            j.WriteNumber("epoch", s.Epoch);
            j.WriteNumber("loss", s.Loss);
            j.WriteNumber("lr", s.Lr);
            j.WriteNumber("grad_norm", s.GradNorm);
            j.WriteNumber("tokens", s.Tokens);
            j.WriteNumber("tokens_per_s", Math.Round(s.TokensPerSecond, 2));
            j.WriteNumber("elapsed_s", Math.Round(s.ElapsedSeconds, 3));
            j.WriteEndObject();
        }
        w.WriteLine(Encoding.UTF8.GetString(buf.ToArray()));
    }

    /// <summary>Keeps only the metrics lines of steps up to `step` (a resumed run rewrites what came after its checkpoint).</summary>
    private static void TrimMetrics(string path, long step)
    {
        if (!File.Exists(path)) return;
        if (step == 0) { File.Delete(path); return; }
        var keep = new List<string>();
        foreach (var line in File.ReadLines(path))
        {
            try
            {
                using var d = JsonDocument.Parse(line);
                if (d.RootElement.GetProperty("step").GetInt64() <= step) keep.Add(line);
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException) { }
        }
        AtomicFile.WriteText(path, keep.Count == 0 ? "" : string.Join("\n", keep) + "\n");
    }

    public string CheckpointPath => Path.Combine(_outDir, CheckpointFileName);

    /// <summary>Writes the whole training state to checkpoint.safetensors atomically.</summary>
    public void SaveCheckpoint()
    {
        Directory.CreateDirectory(_outDir);
        Graph.SyncToHost();
        var w = new SafeTensorsWriter();
        w.Metadata["lori.step"] = Step.ToString(CultureInfo.InvariantCulture);
        w.Metadata["lori.fingerprint"] = Options.Fingerprint();
        w.Metadata["lori.examples"] = _examples.Count.ToString(CultureInfo.InvariantCulture);
        foreach (var p in Graph.Params)
        {
            w.Add("param/" + p.Name, DType.F32, p.Shape, p.Value);
            w.Add("adam_m/" + p.Name, DType.F32, [p.State.M.Length], p.State.M);
            w.Add("adam_v/" + p.Name, DType.F32, [p.State.V.Length], p.State.V);
            w.Metadata["adam_step/" + p.Name] = p.State.Step.ToString(CultureInfo.InvariantCulture);
        }
        if (Adapter is not null && Options.Method != TrainMethod.Lora)
            foreach (var m in Adapter.Modules) w.Add("frozen/" + m.Key('A'), DType.F32, [m.Rank, m.In], m.A);
        w.Write(CheckpointPath);
    }

    /// <summary>Restores the state of a checkpoint written by a run with the same options and data; returns its step.</summary>
    public long LoadCheckpoint()
    {
        var path = CheckpointPath;
        if (!File.Exists(path)) throw new InvalidFileException(path, "no checkpoint to resume from");
        using var f = SafeTensorsFile.Open(path);
        string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v : throw new InvalidFileException(path, $"checkpoint metadata lacks '{key}'");
        var fp = Meta("lori.fingerprint");
        if (fp != Options.Fingerprint())
            throw new InvalidFileException(path, $"checkpoint was written with other options ({fp}); this run has ({Options.Fingerprint()})");
        if (Meta("lori.examples") != _examples.Count.ToString(CultureInfo.InvariantCulture))
            throw new InvalidFileException(path, $"checkpoint was written for {Meta("lori.examples")} examples; the data now has {_examples.Count}");
        foreach (var p in Graph.Params)
        {
            f.ReadFloat32(Entry(f, "param/" + p.Name, p.Value.Length), p.Value);
            f.ReadFloat32(Entry(f, "adam_m/" + p.Name, p.State.M.Length), p.State.M);
            f.ReadFloat32(Entry(f, "adam_v/" + p.Name, p.State.V.Length), p.State.V);
            p.State.Step = long.Parse(Meta("adam_step/" + p.Name), CultureInfo.InvariantCulture);
        }
        if (Adapter is not null && Options.Method != TrainMethod.Lora)
            foreach (var m in Adapter.Modules) f.ReadFloat32(Entry(f, "frozen/" + m.Key('A'), m.A.Length), m.A);
        Graph.WeightsChanged();
        Step = long.Parse(Meta("lori.step"), CultureInfo.InvariantCulture);
        if (Step < 0 || Step > TotalSteps) throw new InvalidFileException(path, $"checkpoint step {Step} is outside this run's 0..{TotalSteps}");
        return Step;
    }

    private static TensorEntry Entry(SafeTensorsFile f, string name, long length)
    {
        if (!f.TryGet(name, out var e)) throw new InvalidFileException(f.Path, $"checkpoint lacks tensor '{name}'");
        if (e.ElementCount != length || e.DType != DType.F32)
            throw new InvalidFileException(f.Path, $"checkpoint tensor '{name}' is {e.DType.SafetensorsName()} of {e.ElementCount} elements; expected F32 of {length}");
        return e;
    }

    /// <summary>
    /// Writes the result: the PEFT adapter (adapter_config.json + adapter_model.safetensors) for the adapter
    /// methods, or a model folder (config.json + model.safetensors, F32) for full fine-tuning.
    /// </summary>
    public void SaveResult()
    {
        Graph.SyncToHost();
        if (Adapter is not null)
        {
            PeftAdapter.Save(Adapter, _outDir);
            return;
        }
        var named = Graph.Weights().Select(w => new NamedTensor(w.Name, DType.F32, w.Shape,
            System.Runtime.InteropServices.MemoryMarshal.AsBytes(w.Value.AsSpan()).ToArray()));
        LlamaModel.Save(_outDir, _model.Config with { TorchDtype = "float32" }, named);
    }

    public void Dispose() => Graph.Dispose();
}

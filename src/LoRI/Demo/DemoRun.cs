using System.Diagnostics;
using System.Text;
using LoRI.Adapters;
using LoRI.Backend;
using LoRI.Backend.Cpu;
using LoRI.Generation;
using LoRI.Model;
using LoRI.Tensors;
using LoRI.Text;
using LoRI.Training;
using LoRI.Training.Data;

namespace LoRI.Demo;

/// <summary>
/// The whole LoRI story on a model the run makes itself, in minutes on a CPU:
///  1. a byte-level tokenizer and a toy Llama-3-architecture model, pre-trained from a random init by full
///     fine-tuning on a generated "copy" corpus, so the base knows the prompt format and how to echo strings;
///  2. three or four tasks with exact answers (reverse, sort, cipher, add), held-out test sets;
///  3. per task: LoRA, LoRI-D, the global 90% mask from LoRI-D's B, LoRI-S (new A, B masked); accuracy of each;
///  4. the task adapters of each method merged (cat and linear, the reference weights), every task scored;
///  5. continual learning (task 1's adapter trained on task 2, method doc section 7) and what task 1 keeps;
///  6. adapters (PEFT), masks, a JSON report and PNG plots in the output folder.
/// Everything runs on Backend (training too: the CPU and CUDA backends both implement the training ops);
/// a backend without them trains on the CPU.
/// </summary>
public sealed class DemoRun : IDisposable
{
    private readonly DemoOptions _o;
    private readonly TextWriter? _log;
    private readonly bool _interactive;
    private readonly WorkerPool? _pool;
    private readonly IBackend _cpu;
    private readonly IBackend _evalBe;
    private readonly IBackend _trainBe;
    private readonly List<string> _files = new();
    private readonly List<(string, double)> _timings = new();
    private string? _tmpDir;
    private LlamaTokenizer _tok = null!;
    private ByteLevelVocab _vocab = null!;
    private LlamaConfig _c = null!;
    private List<NamedTensor> _baseTensors = null!;
    private LlamaModel? _trainModel, _evalModel;
    private Generator? _gen;

    public DemoRun(DemoOptions options)
    {
        options.Validate();
        _o = options;
        _log = options.Progress;
        _pool = options.Threads > 0 ? new WorkerPool(options.Threads) : null;
        _cpu = new CpuBackend(_pool);
        _interactive = _log is not null && ReferenceEquals(_log, Console.Error) && !Console.IsErrorRedirected;
        _evalBe = options.Backend ?? _cpu;
        _trainBe = _evalBe is ITrainingOps ? _evalBe : _cpu;
    }

    /// <summary>Runs every phase and returns the report (also written to OutDir/report.json when OutDir is set).</summary>
    public static DemoReport Run(DemoOptions options)
    {
        using var run = new DemoRun(options);
        return run.Execute();
    }

    public void Dispose()
    {
        _gen?.Dispose();
        _evalModel?.Dispose();
        _trainModel?.Dispose();
        _cpu.Dispose();
        _pool?.Dispose();
        if (_tmpDir is not null) try { Directory.Delete(_tmpDir, true); } catch (IOException) { }
    }

    private string? Out(params string[] parts) => _o.OutDir is null ? null : Path.Combine([_o.OutDir, .. parts]);

    private void Note(string path) => _files.Add(Path.GetRelativePath(_o.OutDir!, path).Replace('\\', '/'));

    private ProgressBar Bar(string label, int total) => new(_log, _interactive, label, total);

    private DemoReport Execute()
    {
        long t0 = Stopwatch.GetTimestamp();
        var tasks = DemoTask.Standard(_o.Tasks);
        if (_o.OutDir is not null) Directory.CreateDirectory(_o.OutDir);
        _log?.WriteLine($"LoRI demo ({_o.Profile.ToString().ToLowerInvariant()}): training on {_trainBe.Name}, generating on {_evalBe.Name}" +
                        (_o.OutDir is null ? "" : $"; writing to {_o.OutDir}"));

        // 1. Tokenizer and base model.
        string modelDir = Out("base-model") ?? (_tmpDir = Directory.CreateTempSubdirectory("lori-demo-").FullName);
        _vocab = TokenizerFiles.WriteByteLevel(modelDir);
        _tok = LlamaTokenizer.Load(modelDir);
        _c = _o.ModelConfig(_vocab.VocabSize, _vocab.BosId, _vocab.EosIds);
        var copy = DemoTask.Copy();
        var (copyTrain, copyTest) = copy.Split(Math.Max(_o.TrainExamples, _o.PretrainBatchSize * _o.PretrainSteps / 4), _o.TestExamples, _o.Seed);
        var pretrainLoss = Pretrain(copyTrain);
        if (_o.OutDir is not null)
        {
            LlamaModel.Save(modelDir, _c, _baseTensors);
            foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
                Note(Path.Combine(modelDir, f));
        }
        _trainModel = Load(_trainBe);
        _evalModel = ReferenceEquals(_evalBe, _trainBe) ? _trainModel : Load(_evalBe);
        _gen = new Generator(_evalModel, Math.Min(64, _evalModel.MaxOutputsPerForward), _c.MaxPositionEmbeddings);

        var data = tasks.Select(t => t.Split(_o.TrainExamples, _o.TestExamples, _o.Seed)).ToList();
        var bar = Bar("base model accuracy", tasks.Count + 1);
        double copyAcc = Accuracy(null, copyTest, out _);
        var taskResults = new List<DemoTaskResult>();
        for (int i = 0; i < tasks.Count; i++)
        {
            bar.Report(i + 1, $"copy {copyAcc:P0}");
            var ex = data[i].Test[0];
            taskResults.Add(new DemoTaskResult(tasks[i].Name, tasks[i].Description, ex.Prompt, ex.Answer, data[i].Train.Count,
                data[i].Test.Count, Accuracy(null, data[i].Test, out _)));
        }
        _timings.Add(("base_eval", bar.Finish($"copy {copyAcc:P0}; " + string.Join(", ", taskResults.Select(t => $"{t.Name} {t.BaseAccuracy:P0}")))));

        // 3. Per task: LoRA, LoRI-D, mask, LoRI-S.
        var adapters = new Dictionary<(string, string), LoraAdapter>();
        var masks = new Dictionary<string, LoraMask>();
        var adapterResults = new List<DemoAdapterResult>();
        var maskResults = new List<DemoMaskResult>();
        for (int ti = 0; ti < tasks.Count; ti++)
        {
            var task = tasks[ti];
            var (train, test) = data[ti];
            var examples = Build(train);
            foreach (var method in new[] { TrainMethod.Lora, TrainMethod.LoriD, TrainMethod.LoriS })
            {
                // LoRI-S draws a new A (the reference does not reuse LoRI-D's); only the mask carries over.
                var adapter = LoriSetup.CreateAdapter(_c, _o.Rank, 2.0 * _o.Rank, Projs.All, AInit.Uniform,
                    _o.Seed * 1000 + (ulong)(ti * 10 + (int)method + 1), "lori-demo-base");
                LoraMask? mask = method == TrainMethod.LoriS ? masks[task.Name] : null;
                var label = $"{task.Name} {method.Name()}";
                var (loss, secs) = TrainAdapter(label, adapter, method, mask, examples, (ulong)(ti * 10 + (int)method));
                adapters[(task.Name, method.Name())] = adapter;
                double acc = Accuracy(adapter, test, out var samples);
                _log?.WriteLine($"{"",26}   {task.Name} accuracy with {method.Name()}: {acc:P0}   e.g. {Quote(samples[0].Prompt)} -> {Quote(samples[0].Got)}");
                long trainable = method switch
                {
                    TrainMethod.Lora => adapter.ParameterCount,
                    TrainMethod.LoriD => adapter.TrainableParameterCount,
                    _ => mask!.Kept,
                };
                long nonZero = adapter.NonZeroB + (method == TrainMethod.Lora ? adapter.Modules.Sum(m => (long)m.A.Count(v => v != 0)) : 0);
                adapterResults.Add(new DemoAdapterResult(task.Name, method.Name(), trainable, nonZero, acc, loss, secs, samples));
                if (Out("adapters", task.Name, method.Name()) is { } dir)
                {
                    PeftAdapter.Save(adapter, dir);
                    Note(Path.Combine(dir, PeftAdapter.ConfigFileName));
                    Note(Path.Combine(dir, PeftAdapter.WeightsFileName));
                }
                if (method == TrainMethod.LoriD)
                {
                    var m = LoraMask.Compute(adapter, _o.Sparsity, MaskScope.Global);
                    masks[task.Name] = m;
                    var grid = m.DensityGrid(out var layers, out var projs);
                    maskResults.Add(new DemoMaskResult(task.Name, m.Density, layers, projs.Select(p => p.ModuleName()).ToArray(), grid));
                    if (Out("masks", $"{task.Name}_{_o.Sparsity:0.##}_mask.safetensors") is { } mp)
                    {
                        m.Save(mp);
                        Note(mp);
                    }
                }
            }
        }

        // 4. Merges: the reference weights (3 adapters: dense 0.5, LoRI-S 0.4; 4 adapters: 0.4, 0.3).
        var mergeResults = new List<DemoMergeResult>();
        var mb = Bar("merged adapters", DemoReport.Methods.Length * 2);
        int done = 0;
        foreach (var method in DemoReport.Methods)
        {
            float w = (tasks.Count, method) switch { (3, "lori-s") => 0.4f, (3, _) => 0.5f, (_, "lori-s") => 0.3f, _ => 0.4f };
            foreach (var merge in new[] { MergeMethod.Cat, MergeMethod.Linear })
            {
                var merged = AdapterMerge.Merge(tasks.Select(t => (adapters[(t.Name, method)], w)).ToList(), merge);
                var acc = new Dictionary<string, double>();
                for (int ti = 0; ti < tasks.Count; ti++) acc[tasks[ti].Name] = Accuracy(merged, data[ti].Test, out _);
                var name = merge == MergeMethod.Cat ? "cat" : "linear";
                mergeResults.Add(new DemoMergeResult(method, name, w, acc));
                mb.Report(++done, $"{method} {name}: " + string.Join(", ", acc.Select(kv => $"{kv.Key} {kv.Value:P0}")));
            }
        }
        _timings.Add(("merges", mb.Finish("")));
        foreach (var m in mergeResults)
            _log?.WriteLine($"{"",26}   {m.Method,-6} {m.Merge,-6} (w {m.Weight:0.##}): " + string.Join(", ", m.Accuracy.Select(kv => $"{kv.Key} {kv.Value:P0}")));

        // 5. Continual learning: task 1's adapter trained on task 2.
        var continual = new List<DemoContinualResult>();
        {
            var (t1, t2) = (tasks[0], tasks[1]);
            var ex2 = Build(data[1].Train);
            foreach (var method in new[] { TrainMethod.Lora, TrainMethod.LoriD, TrainMethod.LoriS })
            {
                var a = Clone(adapters[(t1.Name, method.Name())]);
                // Section 7: LoRI-S trains task 1's sparse B inside task 2's LoRI-D mask; LoRI-D and LoRA train on, unmasked.
                var mask = method == TrainMethod.LoriS ? masks[t2.Name] : null;
                var (loss, _) = TrainAdapter($"{t1.Name}+{t2.Name} {method.Name()}", a, method, mask, ex2, 100 + (ulong)method);
                double before = adapterResults.First(r => r.Task == t1.Name && r.Method == method.Name()).Accuracy;
                double after1 = Accuracy(a, data[0].Test, out _), after2 = Accuracy(a, data[1].Test, out _);
                _log?.WriteLine($"{"",26}   {method.Name()}: {t1.Name} {before:P0} -> {after1:P0}, {t2.Name} {after2:P0}");
                continual.Add(new DemoContinualResult(method.Name(), t1.Name, t2.Name, before, after1, after2, loss));
                if (Out("adapters", $"continual-{t1.Name}-then-{t2.Name}", method.Name()) is { } dir)
                {
                    PeftAdapter.Save(a, dir);
                    Note(Path.Combine(dir, PeftAdapter.WeightsFileName));
                }
            }
        }

        var report = new DemoReport
        {
            Profile = _o.Profile.ToString().ToLowerInvariant(),
            Device = _evalBe.Name,
            Seed = _o.Seed,
            ModelSummary = $"Llama-3 architecture, {_c.NumLayers} layers, hidden {_c.HiddenSize}, ffn {_c.IntermediateSize}, " +
                           $"heads {_c.NumHeads}/{_c.NumKvHeads}, byte-level vocab {_c.VocabSize}",
            ModelParameters = _c.ParameterCount,
            Rank = _o.Rank,
            Sparsity = _o.Sparsity,
            PretrainLoss = pretrainLoss,
            PretrainCopyAccuracy = copyAcc,
            Tasks = taskResults,
            Adapters = adapterResults,
            Merges = mergeResults,
            Continual = continual,
            Masks = maskResults,
            Files = _files,
            Timings = _timings,
            Settings =
            [
                ("hidden", _o.Hidden), ("layers", _o.Layers), ("batch", _o.BatchSize), ("pretrain_batch", _o.PretrainBatchSize), ("train_examples", _o.TrainExamples),
                ("pretrain_steps", _o.PretrainSteps), ("adapter_steps", _o.AdapterSteps), ("pretrain_lr", _o.PretrainLr),
                ("lora_lr", _o.LoraLr), ("lori_d_lr", _o.LoriDLr), ("lori_s_lr", _o.LoriSLr),
            ],
            OutDir = _o.OutDir,
            Seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds,
        };
        if (_o.OutDir is not null)
        {
            DemoPlots.Write(report, Out("plots")!, _files);
            _files.Add("report.json");
            var json = Path.Combine(_o.OutDir, "report.json");
            IO.AtomicFile.Write(json, report.ToJson());
        }
        return report;
    }

    private static string Quote(string s) => "\"" + s.Replace("\n", "\\n") + "\"";

    private List<TrainingExample> Build(List<DemoExample> examples)
    {
        var o = new ExampleOptions { MaxLength = _c.MaxPositionEmbeddings, PromptCut = _c.MaxPositionEmbeddings / 2,
                                     ResponseCut = _c.MaxPositionEmbeddings / 2, EosId = _vocab.EosId };
        return examples.Select((e, i) => ExampleBuilder.Build(e.Prompt, e.Answer, Encode, o, i)).ToList();
    }

    private int[] Encode(string s) => _tok.Encode(s, addBos: false, parseSpecial: false);

    /// <summary>Full fine-tuning from N(0, 0.02) weights on the copy corpus; leaves the result in _baseTensors.</summary>
    private List<double> Pretrain(List<DemoExample> corpus)
    {
        var init = RandomWeights.Create(_c, _o.Seed, DType.F32);
        using var model = new LlamaModel(_c, _trainBe, LlamaWeights.Load(_c, _trainBe, RandomWeights.Source(init)));
        var examples = Build(corpus);
        using var g = new TrainingGraph(model, TrainMethod.Full, null, _o.PretrainBatchSize * examples.Max(e => e.Tokens.Length));
        var bar = Bar("pre-train base (copy)", _o.PretrainSteps);
        var loss = Loop(g, examples, _o.PretrainSteps, _o.PretrainBatchSize, _o.PretrainLr, _o.Seed, bar);
        _timings.Add(("pretrain", bar.Finish($"loss {loss[^1]:F3}")));
        _baseTensors = g.Weights().Select(w => new NamedTensor(w.Name, DType.F32, w.Shape, RandomWeights.Encode(w.Value, DType.F32))).ToList();
        return loss;
    }

    private LlamaModel Load(IBackend be) => new(_c, be, LlamaWeights.Load(_c, be, RandomWeights.Source(_baseTensors)));

    private (List<double> Loss, double Seconds) TrainAdapter(string label, LoraAdapter adapter, TrainMethod method, LoraMask? mask,
                                                             List<TrainingExample> examples, ulong stream)
    {
        using var g = new TrainingGraph(_trainModel!, method, adapter, _o.BatchSize * examples.Max(e => e.Tokens.Length), mask);
        double lr = method switch { TrainMethod.Lora => _o.LoraLr, TrainMethod.LoriD => _o.LoriDLr, _ => _o.LoriSLr };
        var bar = Bar(label, _o.AdapterSteps);
        var loss = Loop(g, examples, _o.AdapterSteps, _o.BatchSize, lr, _o.Seed * 7919 + stream, bar);
        double s = bar.Finish($"loss {loss[0]:F3} -> {loss[^1]:F3}");
        _timings.Add((label.Replace(' ', '_'), s));
        return (loss, s);
    }

    /// <summary>The training loop: seeded epoch order, reference loss (per-sequence sum, batch mean), per-tensor clip, constant LR.</summary>
    private List<double> Loop(TrainingGraph g, List<TrainingExample> examples, int steps, int batchSize, double lr, ulong seed, ProgressBar bar)
    {
        var opt = new AdamWOptions();
        int perEpoch = DataOrder.BatchesPerEpoch(examples.Count, batchSize);
        var losses = new List<double>(steps);
        int[] perm = [];
        var batch = new List<TrainingExample>(batchSize);
        for (int step = 0; step < steps; step++)
        {
            int epoch = step / perEpoch, bi = step % perEpoch;
            if (bi == 0) perm = DataOrder.EpochPermutation(examples.Count, seed, epoch);
            batch.Clear();
            foreach (int i in DataOrder.BatchIndices(perm, batchSize, bi)) batch.Add(examples[i]);
            double loss = g.Run(new Batch(batch, _vocab.PadId, LossReduction.SumTokensMeanSequences));
            if (!double.IsFinite(loss)) throw new LoRIException($"training diverged at step {step + 1} (loss {loss}); lower the learning rate");
            g.OptimizerStep(lr, opt);
            losses.Add(loss);
            bar.Report(step + 1, $"loss {loss:F3}");
        }
        g.SyncToHost();
        return losses;
    }

    /// <summary>Exact-match accuracy of greedy generation on a test set, with the adapter attached unmerged.</summary>
    private double Accuracy(LoraAdapter? adapter, List<DemoExample> test, out List<(string Prompt, string Expected, string Got)> samples)
    {
        var model = _evalModel!;
        var gen = _gen!;
        using var set = adapter is null ? null : AdapterSet.Attach(model, [(adapter, 1f)], merge: false);
        int right = 0, maxAnswer = test.Max(e => Encode(e.Answer).Length);
        samples = new();
        var opts = new GenerationOptions { MaxNewTokens = maxAnswer + 2, StopIds = _c.EosTokenIds };
        for (int start = 0; start < test.Count; start += gen.MaxBatch)
        {
            var chunk = test.Skip(start).Take(gen.MaxBatch).ToList();
            var res = gen.Generate(chunk.Select(e => Encode(e.Prompt)).ToList(), opts);
            for (int i = 0; i < chunk.Count; i++)
            {
                var got = _tok.Decode(res[i].Tokens, skipSpecial: true);
                if (got == chunk[i].Answer) right++;
                if (samples.Count < 3) samples.Add((chunk[i].Prompt, chunk[i].Answer, got));
            }
        }
        return (double)right / test.Count;
    }

    private static LoraAdapter Clone(LoraAdapter a) =>
        new(a.Config, a.Modules.Select(m => new LoraModule(m.Layer, m.Proj, m.Rank, m.In, m.Out, m.Alpha, a.Config.UseRslora,
                                                             m.A.ToArray(), m.B.ToArray())));
}

using LoRI.Backend;
using LoRI.Model;

namespace LoRI.Demo;

/// <summary>How long and how hard the demo trains: quick (tests, under a minute), standard (the default), full.</summary>
public enum DemoProfile { Quick, Standard, Full }

/// <summary>
/// Everything a demo run is fixed by. The profile presets fill the sizes; each can be overridden. The same
/// options and seed give the same numbers on the CPU backend.
/// </summary>
public sealed record DemoOptions
{
    public DemoProfile Profile { get; init; } = DemoProfile.Standard;
    /// <summary>The output folder; null writes nothing (the report still comes back).</summary>
    public string? OutDir { get; init; }
    public ulong Seed { get; init; } = 1;
    /// <summary>Where the demo runs: training, generation and evaluation (a backend without training ops trains on the CPU). Null: the CPU.</summary>
    public IBackend? Backend { get; init; }
    /// <summary>Where progress bars go (stderr in the CLI); null is silent.</summary>
    public TextWriter? Progress { get; init; }

    public int Tasks { get; init; } = 3;
    public int Hidden { get; init; } = 64;
    public int Layers { get; init; } = 2;
    public int Rank { get; init; } = 8;
    public int TrainExamples { get; init; } = 2000;
    public int TestExamples { get; init; } = 100;
    public int BatchSize { get; init; } = 16;
    /// <summary>Pre-training's batch: larger than the adapters', because the copy skill appears after a loss plateau
    /// that small noisy batches leave at unpredictable steps (measured: batch 16 copies 0-100% after 300 steps depending on the data order).</summary>
    public int PretrainBatchSize { get; init; } = 32;
    public int PretrainSteps { get; init; } = 300;
    public int AdapterSteps { get; init; } = 200;
    public double PretrainLr { get; init; } = 1e-2;
    public double LoraLr { get; init; } = 5e-3;
    public double LoriDLr { get; init; } = 1e-2;
    public double LoriSLr { get; init; } = 5e-2;
    /// <summary>
    /// Threads of the training backend; 0 uses every core. One by default: the toy model's matrices are so small
    /// that a fork-join per op costs more than it saves (measured: twice as fast on a busy 2-core machine).
    /// </summary>
    public int Threads { get; init; } = 1;
    public double Sparsity { get; init; } = 0.9;

    public static DemoOptions For(DemoProfile p) => p switch
    {
        DemoProfile.Quick => new DemoOptions { Profile = p, PretrainSteps = 250, AdapterSteps = 160, TestExamples = 60 },
        DemoProfile.Standard => new DemoOptions { Profile = p },
        DemoProfile.Full => new DemoOptions
        {
            Profile = p, Tasks = 4, Hidden = 128, Layers = 3, Rank = 16, TrainExamples = 5000, TestExamples = 200,
            PretrainSteps = 1000, AdapterSteps = 500, Threads = 0,
        },
        _ => throw new ArgumentOutOfRangeException(nameof(p)),
    };

    public static DemoProfile ParseProfile(string name) => name.ToLowerInvariant() switch
    {
        "quick" => DemoProfile.Quick,
        "standard" or "default" => DemoProfile.Standard,
        "full" => DemoProfile.Full,
        _ => throw new ArgumentException($"unknown demo profile '{name}': expected quick, standard or full"),
    };

    /// <summary>The base model's shape: Llama-3's architecture (GQA 2:1, SwiGLU, RoPE theta 500000) at toy size.</summary>
    public LlamaConfig ModelConfig(int vocabSize, int bosId, int[] eosIds) => new()
    {
        HiddenSize = Hidden, IntermediateSize = Hidden * 3, NumLayers = Layers, NumHeads = Hidden / 16, NumKvHeads = Hidden / 32,
        HeadDim = 16, MaxPositionEmbeddings = 128, VocabSize = vocabSize, BosTokenId = bosId, EosTokenIds = eosIds,
        TieWordEmbeddings = false, TorchDtype = "float32",
    };

    public void Validate()
    {
        if (Tasks is not (3 or 4)) throw new ArgumentException($"the demo runs 3 or 4 tasks, not {Tasks}");
        if (Hidden < 32 || Hidden % 32 != 0) throw new ArgumentException($"hidden size must be a positive multiple of 32, found {Hidden}");
        if (Layers < 1 || Rank < 1 || BatchSize < 1 || PretrainBatchSize < 1 || PretrainSteps < 1 || AdapterSteps < 1 || TestExamples < 1 || TrainExamples < BatchSize)
            throw new ArgumentException("layers, rank, batch, steps and example counts must be positive (and training examples at least one batch)");
        if (!(Sparsity > 0 && Sparsity < 1)) throw new ArgumentException($"sparsity must lie in (0, 1), found {Sparsity}");
    }
}

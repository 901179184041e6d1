using LoRI.Model;

namespace LoRI.Generation;

/// <summary>
/// A backend that can run the decode loop on its device: token choice included, so only the chosen ids come
/// back to the host each step. <see cref="Generator"/> asks the model's backend for this interface and uses the
/// decoder it returns instead of sampling host-side logits (the CUDA backend implements it with a captured,
/// replayed decode step). Core code never names a backend: this is the whole seam.
/// </summary>
public interface IDeviceDecoding
{
    /// <summary>
    /// A decoder for <paramref name="model"/> writing into <paramref name="cache"/> (which lives on this backend),
    /// for batches of 1..<paramref name="maxBatch"/> sequences, or null when this backend cannot serve the model
    /// (the generator then samples on the host). The caller disposes it before the cache.
    /// </summary>
    IDeviceDecoder? CreateDecoder(LlamaModel model, KvCache cache, int maxBatch);
}

/// <summary>
/// Prefill and decode steps whose next tokens are chosen on the device. Sequences are identified by their KV-cache
/// slot; the random number of a sampled token is a function of (seed, slot, position of the token) only, so a run
/// is reproducible for a seed whatever the batch around it.
/// </summary>
public interface IDeviceDecoder : IDisposable
{
    /// <summary>
    /// Starts one generation call: the sampling to apply from now on. Anything captured before (graphs holding
    /// weight or adapter pointers that may since have changed) is dropped.
    /// </summary>
    void Begin(SamplingOptions sampling);

    /// <summary>
    /// Runs one prefill chunk (token ids[i] of slot slots[i] at positions[i]) and chooses, for each output row
    /// outputRows[j], the token that follows it: sampled[j].
    /// </summary>
    void Prefill(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions, ReadOnlySpan<int> outputRows, Span<int> sampled);

    /// <summary>
    /// One decode step of n = ids.Length sequences: token ids[j] of slot slots[j] at positions[j] goes in,
    /// next[j] (the chosen following token) comes out. Allocates nothing on the managed heap once the step for
    /// this n has been captured.
    /// </summary>
    void Step(ReadOnlySpan<int> ids, ReadOnlySpan<int> slots, ReadOnlySpan<int> positions, Span<int> next);

    /// <summary>What ran since the last <see cref="Begin"/>.</summary>
    DecodeStats Stats { get; }
}

/// <summary>
/// How a generation call decoded: <see cref="Path"/> is "host" (logits downloaded every step, sampled by
/// <see cref="Sampler"/>) or the device decoder's name (e.g. "cuda-graph"). Steps counts decode steps; on a
/// graph path, GraphReplays of them replayed a captured step, GraphCaptures graphs were captured (one per batch
/// size met) and LaunchesPerStep is the kernel launches in the last captured step (-1 when unknown).
/// </summary>
public readonly record struct DecodeStats(string Path, int Steps, int GraphReplays, int GraphCaptures, int LaunchesPerStep)
{
    public static DecodeStats Host(int steps) => new("host", steps, 0, 0, -1);

    public override string ToString() => GraphCaptures == 0 && GraphReplays == 0
        ? $"decode path {Path}: {Steps} steps"
        : $"decode path {Path}: {Steps} steps, {GraphReplays} graph replays, {GraphCaptures} captured, {LaunchesPerStep} launches per step";
}

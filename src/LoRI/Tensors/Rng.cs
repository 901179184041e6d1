namespace LoRI.Tensors;

/// <summary>
/// xoshiro256** seeded through SplitMix64: a small, fast generator whose stream depends only on the seed
/// (unlike System.Random, whose seeded algorithm is an implementation detail), so runs are reproducible
/// across .NET versions. The whole state is four ulongs: checkpoints save and restore it exactly.
/// </summary>
public struct Rng
{
    public ulong S0, S1, S2, S3;

    public Rng(ulong seed)
    {
        ulong x = seed;
        S0 = SplitMix(ref x); S1 = SplitMix(ref x); S2 = SplitMix(ref x); S3 = SplitMix(ref x);
    }

    /// <summary>A generator for a named sub-stream (e.g. one adapter module), independent of call order.</summary>
    public static Rng ForStream(ulong seed, string name)
    {
        ulong h = 1469598103934665603UL;
        foreach (char c in name) { h ^= c; h *= 1099511628211UL; }
        return new Rng(seed ^ h);
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(S1 * 5, 7) * 9;
        ulong t = S1 << 17;
        S2 ^= S0; S3 ^= S1; S1 ^= S2; S0 ^= S3; S2 ^= t;
        S3 = ulong.RotateLeft(S3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [0, 1) with 24 random bits.</summary>
    public float NextFloat() => (NextUInt64() >> 40) * (1f / (1 << 24));

    /// <summary>Uniform integer in [0, n).</summary>
    public int NextInt(int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n));
        return (int)((NextUInt64() >> 33) % (ulong)n);
    }

    /// <summary>Standard normal by Box-Muller (one value per call; the pair's second is discarded for simplicity of state).</summary>
    public double NextGaussian()
    {
        double u1 = 1.0 - NextDouble(), u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }
}

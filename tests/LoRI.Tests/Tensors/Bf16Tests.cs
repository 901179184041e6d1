using LoRI.Tensors;

namespace LoRI.Tests.Tensors;

public class Bf16Tests
{
    [TestCase(1.0f, (ushort)0x3F80)]
    [TestCase(-2.0f, (ushort)0xC000)]
    // 1 + 2^-8 lies exactly between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
    [TestCase(1.00390625f, (ushort)0x3F80)]
    // 1 + 3 * 2^-8 lies between 1 + 2^-7 and 1 + 2^-6: tie goes to even (1 + 2^-6 = 0x3F82).
    [TestCase(1.01171875f, (ushort)0x3F82)]
    [TestCase(float.PositiveInfinity, (ushort)0x7F80)]
    public void FromFloat_RoundsToNearestEven(float f, ushort expected) =>
        Assert.That(Bf16.FromFloat(f), Is.EqualTo(expected));

    [Test]
    public void FromFloat_KeepsNaN() => Assert.That(float.IsNaN(Bf16.ToFloat(Bf16.FromFloat(float.NaN))), Is.True);

    [Test]
    public void VectorConversion_MatchesScalar()
    {
        var rng = new Random(1);
        var src = new ushort[37];
        for (int i = 0; i < src.Length; i++) src[i] = (ushort)rng.Next(0, 0x7F80);
        var dst = new float[src.Length];
        Bf16.ToFloat(src, dst);
        for (int i = 0; i < src.Length; i++) Assert.That(dst[i], Is.EqualTo(Bf16.ToFloat(src[i])), $"element {i}");
    }
}

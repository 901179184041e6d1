using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using LoRI.Plotting;

namespace LoRI.Tests.Adapters;

/// <summary>The PNG encoder (decoded back by hand) and the charts' geometry.</summary>
public class PlottingTests
{
    [Test]
    public void Crc32_KnownValue()
    {
        // The standard check value of CRC-32 (ISO 3309) for "123456789".
        Assert.That(Png.Crc32(Encoding.ASCII.GetBytes("123456789")), Is.EqualTo(0xCBF43926u));
    }

    [Test]
    public void Png_DecodesBackToThePixels()
    {
        var c = new Canvas(7, 5);
        c.Set(0, 0, new Rgb(1, 2, 3));
        c.FillRect(2, 1, 3, 2, new Rgb(200, 10, 50));
        c.Set(6, 4, Rgb.Black);
        var png = c.ToPng();
        Assert.That(png.AsSpan(0, 8).ToArray(), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }));
        int pos = 8;
        var idat = new MemoryStream();
        var types = new List<string>();
        while (pos < png.Length)
        {
            int len = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(pos));
            var type = Encoding.ASCII.GetString(png, pos + 4, 4);
            types.Add(type);
            var data = png.AsSpan(pos + 8, len);
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(pos + 8 + len)), Is.EqualTo(Png.Crc32(png.AsSpan(pos + 4, len + 4))), $"{type} CRC");
            if (type == "IHDR")
            {
                Assert.That(BinaryPrimitives.ReadInt32BigEndian(data), Is.EqualTo(7));
                Assert.That(BinaryPrimitives.ReadInt32BigEndian(data[4..]), Is.EqualTo(5));
                Assert.That(data[8..13].ToArray(), Is.EqualTo(new byte[] { 8, 2, 0, 0, 0 }));
            }
            if (type == "IDAT") idat.Write(data);
            pos += 12 + len;
        }
        Assert.That(types, Is.EqualTo(new[] { "IHDR", "IDAT", "IEND" }));
        idat.Position = 0;
        using var z = new ZLibStream(idat, CompressionMode.Decompress);
        var raw = new MemoryStream();
        z.CopyTo(raw);
        var bytes = raw.ToArray();
        Assert.That(bytes.Length, Is.EqualTo(5 * (1 + 7 * 3)));
        for (int y = 0; y < 5; y++)
        {
            Assert.That(bytes[y * 22], Is.EqualTo(0), "filter type none");
            for (int x = 0; x < 7; x++)
            {
                var p = c[x, y];
                Assert.That(bytes.AsSpan(y * 22 + 1 + x * 3, 3).ToArray(), Is.EqualTo(new[] { p.R, p.G, p.B }), $"pixel {x},{y}");
            }
        }
        Assert.That(c[3, 2], Is.EqualTo(new Rgb(200, 10, 50)));
        Assert.That(c[3, 3], Is.EqualTo(Rgb.White));
    }

    [Test]
    public void Font_DrawsGlyphPixels()
    {
        var c = new Canvas(20, 10);
        c.Text(1, 1, "1", Rgb.Black);
        // '1' rows: "..#..", ".##..", ...: its stem is column 2 on every row but the last, which is ".###.".
        for (int row = 0; row < 7; row++) Assert.That(c[1 + 2, 1 + row], Is.EqualTo(Rgb.Black), $"stem row {row}");
        Assert.That(c[1, 1], Is.EqualTo(Rgb.White));
        Assert.That(c[1 + 1, 1 + 1], Is.EqualTo(Rgb.Black), "the flag of the 1");
        Assert.That(Font5x7.Glyph('q').ToArray(), Is.EqualTo(Font5x7.Glyph('Q').ToArray()), "lower case draws as capitals");
        Assert.That(Font5x7.Glyph('~').ToArray(), Is.EqualTo(Font5x7.Glyph('?').ToArray()));
        Assert.That(Font5x7.Measure("abc"), Is.EqualTo(17));
    }

    [Test]
    public void Heatmap_CellsTakeTheirValuesColour()
    {
        var c = Charts.Heatmap(new double[,] { { 0, 1 }, { 0.5, double.NaN } }, ["L0", "L1"], ["q", "k"], "T");
        var colours = new HashSet<Rgb>();
        for (int y = 0; y < c.Height; y++)
            for (int x = 0; x < c.Width; x++) colours.Add(c[x, y]);
        Assert.That(colours, Does.Contain(Rgb.Sequential(0)));
        Assert.That(colours, Does.Contain(Rgb.Sequential(1)));
        Assert.That(colours, Does.Contain(Rgb.Sequential(0.5)));
        Assert.That(colours, Does.Contain(Rgb.Grey), "NaN cell");
    }

    [Test]
    public void LinesAndBars_DrawInPaletteColours()
    {
        var lines = Charts.Lines([new Series("train", [(0, 3.0), (1, 2.0), (2, 1.5)]), new Series("eval", [(0, 3.2), (2, 1.9)])], "LOSS", "step", "loss");
        var bars = Charts.Bars([("boolq", 0.8), ("piqa", 0.6)], "ACCURACY");
        int Count(Canvas c, Rgb col) { int n = 0; for (int y = 0; y < c.Height; y++) for (int x = 0; x < c.Width; x++) if (c[x, y] == col) n++; return n; }
        Assert.That(Count(lines, Rgb.Palette[0]), Is.GreaterThan(100));
        Assert.That(Count(lines, Rgb.Palette[1]), Is.GreaterThan(100));
        // Bar heights are proportional to the values (0.8 vs 0.6 over the same axis from 0).
        double ratio = (double)Count(bars, Rgb.Palette[0]) / Count(bars, Rgb.Palette[1]);
        Assert.That(ratio, Is.EqualTo(0.8 / 0.6).Within(0.05));
        Assert.That(lines.ToPng().Length, Is.GreaterThan(100));
    }
}

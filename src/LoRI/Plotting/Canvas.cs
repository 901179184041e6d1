namespace LoRI.Plotting;

/// <summary>An RGB colour.</summary>
public readonly record struct Rgb(byte R, byte G, byte B)
{
    public static readonly Rgb White = new(255, 255, 255), Black = new(0, 0, 0), Grey = new(200, 200, 200), DarkGrey = new(90, 90, 90);

    /// <summary>A colour-blind-friendly palette for series (Okabe-Ito).</summary>
    public static readonly Rgb[] Palette =
    [
        new(0, 114, 178), new(213, 94, 0), new(0, 158, 115), new(204, 121, 167),
        new(230, 159, 0), new(86, 180, 233), new(240, 228, 66), new(0, 0, 0),
    ];

    /// <summary>A viridis-like sequential map: t in [0, 1] from dark purple through teal to yellow.</summary>
    public static Rgb Sequential(double t)
    {
        ReadOnlySpan<(double R, double G, double B)> stops =
            [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)];
        if (double.IsNaN(t)) return Grey;
        t = Math.Clamp(t, 0, 1) * (stops.Length - 1);
        int i = Math.Min((int)t, stops.Length - 2);
        double f = t - i;
        var (a, b) = (stops[i], stops[i + 1]);
        return new((byte)(a.R + f * (b.R - a.R)), (byte)(a.G + f * (b.G - a.G)), (byte)(a.B + f * (b.B - a.B)));
    }
}

/// <summary>A white RGB raster with the few drawing primitives the charts need; SavePng writes it.</summary>
public sealed class Canvas
{
    private readonly byte[] _rgb;
    public int Width { get; }
    public int Height { get; }

    public Canvas(int width, int height)
    {
        if (width < 1 || height < 1 || (long)width * height > 50_000_000) throw new ArgumentException($"canvas size {width}x{height} is out of range");
        Width = width; Height = height;
        _rgb = new byte[width * height * 3];
        Array.Fill(_rgb, (byte)255);
    }

    public Rgb this[int x, int y]
    {
        get { int i = (y * Width + x) * 3; return new Rgb(_rgb[i], _rgb[i + 1], _rgb[i + 2]); }
    }

    public void Set(int x, int y, Rgb c)
    {
        if ((uint)x >= (uint)Width || (uint)y >= (uint)Height) return;
        int i = (y * Width + x) * 3;
        _rgb[i] = c.R; _rgb[i + 1] = c.G; _rgb[i + 2] = c.B;
    }

    public void FillRect(int x, int y, int w, int h, Rgb c)
    {
        for (int yy = Math.Max(0, y); yy < Math.Min(Height, y + h); yy++)
            for (int xx = Math.Max(0, x); xx < Math.Min(Width, x + w); xx++) Set(xx, yy, c);
    }

    public void Rect(int x, int y, int w, int h, Rgb c)
    {
        Line(x, y, x + w - 1, y, c); Line(x, y + h - 1, x + w - 1, y + h - 1, c);
        Line(x, y, x, y + h - 1, c); Line(x + w - 1, y, x + w - 1, y + h - 1, c);
    }

    /// <summary>A line from (x0, y0) to (x1, y1), both ends included (Bresenham), `thickness` pixels wide.</summary>
    public void Line(int x0, int y0, int x1, int y1, Rgb c, int thickness = 1)
    {
        int dx = Math.Abs(x1 - x0), dy = -Math.Abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
        int lo = -(thickness - 1) / 2, hi = thickness / 2;
        while (true)
        {
            for (int a = lo; a <= hi; a++)
                for (int b = lo; b <= hi; b++) Set(x0 + a, y0 + b, c);
            if (x0 == x1 && y0 == y1) break;
            int e2 = 2 * err;
            if (e2 >= dy) { err += dy; x0 += sx; }
            if (e2 <= dx) { err += dx; y0 += sy; }
        }
    }

    /// <summary>Draws text with its top-left corner at (x, y); `vertical` turns it 90 degrees counter-clockwise (reads bottom to top).</summary>
    public void Text(int x, int y, string s, Rgb c, int scale = 1, bool vertical = false)
    {
        for (int k = 0; k < s.Length; k++)
        {
            var g = Font5x7.Glyph(s[k]);
            for (int row = 0; row < Font5x7.Height; row++)
                for (int col = 0; col < Font5x7.Width; col++)
                {
                    if ((g[row] & (1 << (Font5x7.Width - 1 - col))) == 0) continue;
                    int px = k * Font5x7.Advance + col, py = row;
                    if (vertical) FillRect(x + py * scale, y - (px + 1) * scale + 1, scale, scale, c);
                    else FillRect(x + px * scale, y + py * scale, scale, scale, c);
                }
        }
    }

    /// <summary>Text centred horizontally on cx.</summary>
    public void TextCentered(int cx, int y, string s, Rgb c, int scale = 1) => Text(cx - Font5x7.Measure(s, scale) / 2, y, s, c, scale);

    public byte[] ToPng() => Png.Encode(Width, Height, _rgb);

    /// <summary>Writes the PNG to a temporary name, then renames it over <paramref name="path"/>.</summary>
    public void SavePng(string path)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full);
        if (dir is not null) Directory.CreateDirectory(dir);
        var tmp = full + ".tmp";
        File.WriteAllBytes(tmp, ToPng());
        File.Move(tmp, full, overwrite: true);
    }
}

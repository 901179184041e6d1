using System.Globalization;

namespace LoRI.Plotting;

/// <summary>A named series of (x, y) points for <see cref="Charts.Lines"/>.</summary>
public sealed record Series(string Name, IReadOnlyList<(double X, double Y)> Points);

/// <summary>
/// Three small chart types drawn on a <see cref="Canvas"/> with the built-in font: a heatmap (e.g. mask density per
/// layer and module), a bar chart (e.g. accuracy per task) and a line chart (e.g. loss curves). Each returns the
/// canvas; call SavePng on it.
/// </summary>
public static class Charts
{
    private const int Margin = 12, Scale = 1;
    private static int LineHeight => (Font5x7.Height + 4) * Scale;

    /// <summary>Short tick text: up to 4 significant digits, invariant culture.</summary>
    public static string Format(double v)
    {
        if (Math.Abs(v) < 1e-12) return "0";
        double a = Math.Abs(v);
        if (a >= 1e5 || a < 1e-3) return v.ToString("0.##E+0", CultureInfo.InvariantCulture);
        return v.ToString("G4", CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// values[row, col] as coloured cells (NaN grey), rows top to bottom, with a colour bar from min to max.
    /// </summary>
    public static Canvas Heatmap(double[,] values, IReadOnlyList<string> rowLabels, IReadOnlyList<string> colLabels, string title,
                                 double min = 0, double max = 1, string? valueLabel = null)
    {
        int rows = values.GetLength(0), cols = values.GetLength(1);
        if (rowLabels.Count != rows || colLabels.Count != cols) throw new ArgumentException("one label per row and per column");
        if (!(max > min)) throw new ArgumentException($"heatmap range [{min}, {max}] is empty");
        int cellW = Math.Max(28, colLabels.Max(l => Font5x7.Measure(l)) + 4);
        int cellH = Math.Clamp(400 / Math.Max(1, rows), 9, 24);
        int labelW = rowLabels.Count == 0 ? 0 : rowLabels.Max(l => Font5x7.Measure(l)) + 6;
        int left = Margin + labelW, top = Margin + 3 * LineHeight;
        int barX = left + cols * cellW + 16;
        int width = barX + 14 + 8 + Font5x7.Measure(Format(max).Length > Format(min).Length ? Format(max) : Format(min)) + Margin;
        int height = top + rows * cellH + LineHeight + Margin + 4;
        var c = new Canvas(Math.Max(width, Font5x7.Measure(title, 2) + 2 * Margin), height);
        c.Text(Margin, Margin, title, Rgb.Black, 2);
        for (int j = 0; j < cols; j++)
            c.TextCentered(left + j * cellW + cellW / 2, top + rows * cellH + 4, colLabels[j], Rgb.Black);
        for (int i = 0; i < rows; i++)
        {
            c.Text(Margin, top + i * cellH + (cellH - Font5x7.Height) / 2, rowLabels[i], Rgb.Black);
            for (int j = 0; j < cols; j++)
                c.FillRect(left + j * cellW, top + i * cellH, cellW - 1, cellH - 1, Rgb.Sequential((values[i, j] - min) / (max - min)));
        }
        int barH = rows * cellH;
        for (int y = 0; y < barH; y++) c.FillRect(barX, top + y, 14, 1, Rgb.Sequential(1 - (double)y / Math.Max(1, barH - 1)));
        c.Rect(barX, top, 14, barH, Rgb.DarkGrey);
        c.Text(barX + 18, top, Format(max), Rgb.Black);
        c.Text(barX + 18, top + barH - Font5x7.Height, Format(min), Rgb.Black);
        if (valueLabel is not null) c.Text(barX, top - LineHeight, valueLabel, Rgb.DarkGrey);
        return c;
    }

    /// <summary>Vertical bars from zero, value printed above each, labels below.</summary>
    public static Canvas Bars(IReadOnlyList<(string Label, double Value)> bars, string title, string yLabel = "", int width = 640, int height = 400)
    {
        if (bars.Count == 0) throw new ArgumentException("no bars to draw");
        double lo = Math.Min(0, bars.Min(b => b.Value)), hi = Math.Max(0, bars.Max(b => b.Value));
        if (hi == lo) hi = lo + 1;
        hi += (hi - lo) * 0.08;
        var (c, plot) = Frame(width, height, title, "", yLabel, ref lo, ref hi);
        int slot = plot.W / bars.Count, barW = Math.Max(1, slot * 2 / 3);
        int Y(double v) => plot.Y + plot.H - 1 - (int)Math.Round((v - lo) / (hi - lo) * (plot.H - 1));
        for (int i = 0; i < bars.Count; i++)
        {
            int x = plot.X + i * slot + (slot - barW) / 2;
            int y0 = Y(0), y1 = Y(bars[i].Value);
            c.FillRect(x, Math.Min(y0, y1), barW, Math.Abs(y1 - y0) + 1, Rgb.Palette[i % Rgb.Palette.Length]);
            c.TextCentered(x + barW / 2, Math.Min(y0, y1) - Font5x7.Height - 3, Format(bars[i].Value), Rgb.Black);
            c.TextCentered(x + barW / 2, plot.Y + plot.H + 4, bars[i].Label, Rgb.Black);
        }
        return c;
    }

    /// <summary>One polyline per series over shared axes, with a legend in the top-right corner.</summary>
    public static Canvas Lines(IReadOnlyList<Series> series, string title, string xLabel = "", string yLabel = "", int width = 640, int height = 400)
    {
        var pts = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).ToList();
        if (pts.Count == 0) throw new ArgumentException("no finite points to draw");
        double x0 = pts.Min(p => p.X), x1 = pts.Max(p => p.X), y0 = pts.Min(p => p.Y), y1 = pts.Max(p => p.Y);
        if (x1 == x0) x1 = x0 + 1;
        if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
        double pad = (y1 - y0) * 0.05;
        y0 -= pad; y1 += pad;
        var (c, plot) = Frame(width, height, title, xLabel, yLabel, ref y0, ref y1, (x0, x1));
        for (int k = 0; k < series.Count; k++)
        {
            var col = Rgb.Palette[k % Rgb.Palette.Length];
            (int, int)? prev = null;
            foreach (var (x, y) in series[k].Points)
            {
                if (!double.IsFinite(x) || !double.IsFinite(y)) { prev = null; continue; }
                var p = (plot.X + (int)Math.Round((x - x0) / (x1 - x0) * (plot.W - 1)), plot.Y + plot.H - 1 - (int)Math.Round((y - y0) / (y1 - y0) * (plot.H - 1)));
                if (prev is { } q) c.Line(q.Item1, q.Item2, p.Item1, p.Item2, col, 2);
                else c.FillRect(p.Item1 - 1, p.Item2 - 1, 3, 3, col);
                prev = p;
            }
            int ly = plot.Y + 4 + k * LineHeight;
            int lx = plot.X + plot.W - Font5x7.Measure(series[k].Name) - 24;
            c.FillRect(lx, ly + 2, 14, 3, col);
            c.Text(lx + 18, ly, series[k].Name, Rgb.Black);
        }
        return c;
    }

    /// <summary>A round tick step (1, 2 or 5 times a power of ten) giving about `ticks` intervals over the range.</summary>
    public static double NiceStep(double range, int ticks = 4)
    {
        double raw = range / ticks, mag = Math.Pow(10, Math.Floor(Math.Log10(raw))), f = raw / mag;
        return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
    }

    /// <summary>
    /// Title, axes with y ticks at round values (the y range is widened to whole steps), x ticks when an x range
    /// is given, axis labels; returns the plot area.
    /// </summary>
    private static (Canvas, (int X, int Y, int W, int H)) Frame(int width, int height, string title, string xLabel, string yLabel,
                                                                ref double y0, ref double y1, (double Lo, double Hi)? x = null)
    {
        var c = new Canvas(width, height);
        c.Text(Margin, Margin, title, Rgb.Black, 2);
        double step = NiceStep(y1 - y0);
        y0 = Math.Floor(y0 / step + 1e-9) * step;
        y1 = Math.Ceiling(y1 / step - 1e-9) * step;
        int nTicks = (int)Math.Round((y1 - y0) / step);
        double lo = y0;
        var yTicks = Enumerable.Range(0, nTicks + 1).Select(i => lo + step * i).ToArray();
        int tickW = yTicks.Max(t => Font5x7.Measure(Format(t)));
        int left = Margin + (yLabel.Length > 0 ? LineHeight : 0) + tickW + 6;
        int top = Margin + 3 * LineHeight;
        int bottom = height - Margin - 2 * LineHeight - (xLabel.Length > 0 ? LineHeight : 0);
        var plot = (X: left, Y: top, W: width - left - Margin, H: bottom - top);
        if (plot.W < 20 || plot.H < 20) throw new ArgumentException($"a {width}x{height} chart leaves no room to plot");
        foreach (var t in yTicks)
        {
            int y = plot.Y + plot.H - 1 - (int)Math.Round((t - y0) / (y1 - y0) * (plot.H - 1));
            c.Line(plot.X, y, plot.X + plot.W - 1, y, new Rgb(235, 235, 235));
            var s = Format(t);
            c.Text(plot.X - 4 - Font5x7.Measure(s), y - Font5x7.Height / 2, s, Rgb.DarkGrey);
        }
        if (x is { } xr)
            for (int i = 0; i <= 4; i++)
            {
                double t = xr.Lo + (xr.Hi - xr.Lo) * i / 4;
                int px = plot.X + (int)Math.Round((double)i / 4 * (plot.W - 1));
                c.Line(px, plot.Y + plot.H, px, plot.Y + plot.H + 2, Rgb.DarkGrey);
                c.TextCentered(px, plot.Y + plot.H + 5, Format(t), Rgb.DarkGrey);
            }
        c.Line(plot.X - 1, plot.Y, plot.X - 1, plot.Y + plot.H, Rgb.Black);
        c.Line(plot.X - 1, plot.Y + plot.H, plot.X + plot.W - 1, plot.Y + plot.H, Rgb.Black);
        if (xLabel.Length > 0) c.TextCentered(plot.X + plot.W / 2, height - Margin - Font5x7.Height, xLabel, Rgb.Black);
        if (yLabel.Length > 0) c.Text(Margin, plot.Y + plot.H / 2 + Font5x7.Measure(yLabel) / 2, yLabel, Rgb.Black, 1, vertical: true);
        return (c, plot);
    }
}

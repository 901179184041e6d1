using System.Diagnostics;

namespace LoRI.Demo;

/// <summary>
/// One phase's progress on a text stream: redrawn in place ("\r") on a terminal at most ten times a second,
/// and on a redirected stream written once, when the phase ends, so logs stay one line per phase.
/// </summary>
public sealed class ProgressBar
{
    private const int Width = 28;
    private readonly TextWriter? _w;
    private readonly bool _interactive;
    private readonly string _label;
    private readonly int _total;
    private readonly long _start = Stopwatch.GetTimestamp();
    private long _lastDraw;
    private int _done;
    private string _note = "";

    public ProgressBar(TextWriter? w, bool interactive, string label, int total)
    {
        _w = w;
        _interactive = interactive;
        _label = label;
        _total = Math.Max(1, total);
        if (_interactive) Draw();
    }

    /// <summary>Marks <paramref name="done"/> of the total complete, with a short note (a loss, an accuracy).</summary>
    public void Report(int done, string? note = null)
    {
        _done = Math.Min(done, _total);
        if (note is not null) _note = note;
        if (!_interactive || _w is null) return;
        long now = Stopwatch.GetTimestamp();
        if (_done < _total && Stopwatch.GetElapsedTime(_lastDraw, now).TotalMilliseconds < 100) return;
        _lastDraw = now;
        Draw();
    }

    /// <summary>Ends the phase with its final note; returns its seconds.</summary>
    public double Finish(string? note = null)
    {
        _done = _total;
        if (note is not null) _note = note;
        Draw();
        _w?.WriteLine();
        return Stopwatch.GetElapsedTime(_start).TotalSeconds;
    }

    private void Draw()
    {
        if (_w is null) return;
        if (!_interactive && _done < _total) return;
        int filled = (int)((long)_done * Width / _total);
        double s = Stopwatch.GetElapsedTime(_start).TotalSeconds;
        var line = $"{_label,-26} [{new string('#', filled)}{new string('.', Width - filled)}] {_done,4}/{_total,-4} {s,5:F1}s  {_note}";
        _w.Write(_interactive ? "\r" + line.PadRight(110) : line);
        _w.Flush();
    }
}

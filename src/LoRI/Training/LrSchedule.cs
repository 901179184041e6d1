namespace LoRI.Training;

public enum LrScheduleKind { Constant, Warmup, Linear, Cosine }

/// <summary>
/// Learning rate per optimizer step, with the formulas of transformers' schedulers (get_constant_schedule,
/// get_constant_schedule_with_warmup, get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup);
/// `step` is the 0-based index of the step about to be taken, so a warmup starts at lr 0 as they do.
///  - Constant: lr (the reference).
///  - Warmup:   lr * step / warmup while step &lt; warmup, then lr.
///  - Linear:   warmup, then lr * (total - step) / (total - warmup), never below 0.
///  - Cosine:   warmup, then lr * 0.5 * (1 + cos(pi * progress)), progress = (step - warmup) / (total - warmup).
/// </summary>
public sealed record LrSchedule(LrScheduleKind Kind, double BaseLr, int WarmupSteps = 0, int TotalSteps = 0)
{
    public static LrSchedule Constant(double lr) => new(LrScheduleKind.Constant, lr);

    public static LrScheduleKind ParseKind(string name) => name.ToLowerInvariant() switch
    {
        "constant" => LrScheduleKind.Constant,
        "warmup" => LrScheduleKind.Warmup,
        "linear" => LrScheduleKind.Linear,
        "cosine" => LrScheduleKind.Cosine,
        _ => throw new ArgumentException($"unknown learning-rate schedule '{name}': expected constant, warmup, linear or cosine"),
    };

    public double At(long step)
    {
        if (Kind == LrScheduleKind.Constant) return BaseLr;
        if (step < WarmupSteps) return BaseLr * step / Math.Max(1, WarmupSteps);
        double span = Math.Max(1, TotalSteps - WarmupSteps);
        double progress = (step - WarmupSteps) / span;
        return Kind switch
        {
            LrScheduleKind.Warmup => BaseLr,
            LrScheduleKind.Linear => BaseLr * Math.Max(0, (TotalSteps - step) / span),
            LrScheduleKind.Cosine => BaseLr * Math.Max(0, 0.5 * (1 + Math.Cos(Math.PI * progress))),
            _ => throw new InvalidOperationException($"unknown schedule {Kind}"),
        };
    }
}

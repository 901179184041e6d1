namespace LoRI.Runner.Verbs;

/// <summary>`info --model DIR`: placeholder verb showing the verb shape; filled in by the model work.</summary>
public static class InfoVerb
{
    public static readonly Verb Verb = new("info", "config, parameter count and memory of a model",
        "info --model DIR [--json]", Run);

    private static int Run(Args a)
    {
        var dir = a.Require("model");
        a.EnsureAllUsed();
        throw new LoRIException($"{dir}: model loading is not built yet");
    }
}

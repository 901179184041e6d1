namespace LoRI.Demo;

/// <summary>The demo's PNG plots.</summary>
public static class DemoPlots
{
    public static void Write(DemoReport report, string dir, List<string> files)
    {
    }
}

namespace LoRI.Tests.Runner;

/// <summary>Runs LoRI.Runner.Program.Main in-process with stdout and stderr captured.</summary>
internal static class CliRunner
{
    private static readonly object ConsoleLock = new();

    public static (int Exit, string Out, string Err) Run(params string[] argv)
    {
        lock (ConsoleLock)
        {
            var oldOut = Console.Out;
            var oldErr = Console.Error;
            var o = new StringWriter { NewLine = "\n" };
            var e = new StringWriter { NewLine = "\n" };
            Console.SetOut(o);
            Console.SetError(e);
            try
            {
                int code = LoRI.Runner.Program.Main(argv);
                return (code, o.ToString(), e.ToString());
            }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldErr);
            }
        }
    }
}

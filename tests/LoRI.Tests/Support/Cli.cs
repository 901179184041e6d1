namespace LoRI.Tests.Support;

/// <summary>Runs the CLI in-process through LoRI.Runner.Program.Main with stdout and stderr captured.</summary>
public static class Cli
{
    public sealed record Result(int ExitCode, string Out, string Err);

    private static readonly object Gate = new();

    public static Result Run(params string[] args)
    {
        lock (Gate)
        {
            var oldOut = Console.Out;
            var oldErr = Console.Error;
            var o = new StringWriter();
            var e = new StringWriter();
            Console.SetOut(o);
            Console.SetError(e);
            try
            {
                int rc = LoRI.Runner.Program.Main(args);
                return new Result(rc, o.ToString(), e.ToString());
            }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldErr);
            }
        }
    }
}

using BenchmarkDotNet.Running;

namespace LoRI.Bench;

/// <summary>`dotnet run -c Release --project bench/LoRI.Bench -- --filter '*Name*'` runs the chosen benchmarks.</summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}

namespace LoRI.Tests.Text;

/// <summary>Finds the shared test fixtures: $LORI_FIXTURES, else a `shared/fixtures` folder next to an ancestor of the test directory.</summary>
internal static class Fixtures
{
    public static string? Find(string name)
    {
        var env = Environment.GetEnvironmentVariable("LORI_FIXTURES");
        if (!string.IsNullOrEmpty(env))
        {
            var p = Path.Combine(env, name);
            if (Directory.Exists(p)) return p;
        }
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "shared", "fixtures", name);
            if (Directory.Exists(p)) return p;
        }
        return null;
    }

    /// <summary>The folder, or Assert.Ignore with the reason when it is absent.</summary>
    public static string Require(string name) =>
        Find(name) ?? IgnoreMissing(name);

    private static string IgnoreMissing(string name)
    {
        // CI lays shared/ beside the clone: there a missing fixture is a broken setup, not a reason to skip.
        if (Environment.GetEnvironmentVariable("CI") == "true")
            Assert.Fail($"fixture '{name}' not found beside the repository, and CI=true: the shared fixtures must be present in CI");
        Assert.Ignore($"fixture '{name}' not found: set LORI_FIXTURES to the folder holding it, or place shared/fixtures/{name} beside the repository");
        return null!;
    }
}

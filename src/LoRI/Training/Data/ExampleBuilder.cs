namespace LoRI.Training.Data;

/// <summary>
/// How text becomes token ids. The reference preset (lori-method.md section 3): no BOS, EOS appended to the
/// response, 512 tokens at most; a longer example has its prompt cut to the first 256 tokens, then its
/// response to the first 256 (the response may lose its EOS that way, as in the reference).
/// </summary>
public sealed record ExampleOptions
{
    public int MaxLength { get; init; } = 512;
    public int PromptCut { get; init; } = 256;
    public int ResponseCut { get; init; } = 256;
    public bool AddBos { get; init; }
    public int BosId { get; init; } = 128000;
    /// <summary>Appended after the response's tokens. Off for targets that carry their own end marker (Llama-3 chat's &lt;|eot_id|&gt;).</summary>
    public bool AppendEos { get; init; } = true;
    public int EosId { get; init; } = 128001;

    public void Validate()
    {
        if (MaxLength < 2) throw new ArgumentException($"max length must be at least 2, found {MaxLength}");
        if (PromptCut < 0 || ResponseCut < 1 || PromptCut + ResponseCut > MaxLength)
            throw new ArgumentException($"prompt cut {PromptCut} + response cut {ResponseCut} must be positive and fit in max length {MaxLength}");
    }
}

/// <summary>One tokenised example: Tokens = prompt then response; the loss covers Tokens[PromptLength..].</summary>
public sealed record TrainingExample(int[] Tokens, int PromptLength, int Line)
{
    public int ResponseLength => Tokens.Length - PromptLength;
}

public static class ExampleBuilder
{
    /// <summary>Tokenises prompt and target separately, appends EOS, applies the truncation rule.</summary>
    public static TrainingExample Build(string prompt, string target, Func<string, int[]> encode, ExampleOptions o, int line = 0)
    {
        var p = encode(prompt);
        var r = encode(target);
        int pl = p.Length + (o.AddBos ? 1 : 0), rl = r.Length + (o.AppendEos ? 1 : 0);
        var prompt2 = new int[pl];
        if (o.AddBos) prompt2[0] = o.BosId;
        p.CopyTo(prompt2, o.AddBos ? 1 : 0);
        var resp = new int[rl];
        r.CopyTo(resp, 0);
        if (o.AppendEos) resp[^1] = o.EosId;
        if (pl + rl > o.MaxLength)
        {
            pl = Math.Min(pl, o.PromptCut);
            rl = Math.Min(rl, o.ResponseCut);
        }
        var tokens = new int[pl + rl];
        Array.Copy(prompt2, tokens, pl);
        Array.Copy(resp, 0, tokens, pl, rl);
        return new TrainingExample(tokens, pl, line);
    }

    /// <summary>Every record rendered with the template and built; chat targets keep their own end marker (no EOS added).</summary>
    public static List<TrainingExample> BuildAll(IEnumerable<DataRecord> records, TemplateKind template, Func<string, int[]> encode, ExampleOptions o)
    {
        o.Validate();
        var list = new List<TrainingExample>();
        foreach (var rec in records)
        {
            var (prompt, target) = PromptTemplates.Render(rec, template);
            bool chat = template == TemplateKind.Llama3Chat || (template == TemplateKind.Auto && rec is ChatRecord);
            var ex = Build(prompt, target, encode, chat ? o with { AppendEos = false } : o, rec.Line);
            if (ex.ResponseLength == 0) continue;
            list.Add(ex);
        }
        return list;
    }
}

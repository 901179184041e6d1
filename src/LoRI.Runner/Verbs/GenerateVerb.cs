using LoRI.Generation;
using LoRI.Text;

namespace LoRI.Runner.Verbs;

/// <summary>`generate`: text continuation (or a chat reply) for one or several prompts, streamed as it is produced.</summary>
public static class GenerateVerb
{
    public static readonly Verb Verb = new("generate", "generate text from one or several prompts",
        "generate --model DIR --prompt TEXT [--prompt TEXT ...] [--chat] [--system TEXT] [--no-bos] [--max-new-tokens N] " +
        "[--temperature T] [--top-p P] [--top-k K] [--seed S] [--stop TEXT ...] [--decode device|host] [--json] " + Session.AdapterUsage + " " + Session.DeviceUsage, Run);

    private static int Run(Args a)
    {
        var prompts = a.GetAll("prompt");
        if (prompts.Count == 0) throw new UsageException("--prompt is required");
        bool chat = a.Flag("chat"), noBos = a.Flag("no-bos"), json = a.Flag("json");
        var system = a.Get("system");
        if (system is not null && !chat) throw new UsageException("--system needs --chat");
        var stops = a.GetAll("stop");
        var sampling = new SamplingOptions
        {
            Temperature = a.GetFloat("temperature", 0f),
            TopP = a.GetFloat("top-p", 1f),
            TopK = a.GetInt("top-k", 0),
            Seed = (ulong)a.GetLong("seed", 0),
        };
        try { sampling.Validate(); } catch (ArgumentException e) { throw new UsageException(e.Message); }
        int maxNew = a.GetInt("max-new-tokens", 128);
        if (maxNew < 1) throw new UsageException("--max-new-tokens must be at least 1");
        bool deviceDecode = ParseDecode(a.Get("decode"));

        using var s = Session.Open(a);
        a.EnsureAllUsed();
        var tok = s.Tokenizer;
        var ids = prompts.Select(p =>
        {
            if (!chat) return tok.Encode(p, addBos: !noBos && tok.BosId is not null);
            var messages = new List<(string, string)>();
            if (system is not null) messages.Add(("system", system));
            messages.Add(("user", p));
            return tok.Encode(ChatTemplate.Llama3(messages, addGenerationPrompt: true));
        }).ToArray();
        int longest = ids.Max(x => x.Length);
        using var gen = new Generator(s.Model, ids.Length, Math.Min(s.Model.Config.MaxPositionEmbeddings, longest + maxNew))
        {
            UseDeviceDecoder = deviceDecode,
        };

        // Per sequence: a streaming decoder and the text so far, so stop strings end generation the moment they appear.
        var decoders = ids.Select(_ => tok.CreateStreamDecoder(skipSpecial: true)).ToArray();
        var texts = ids.Select(_ => new System.Text.StringBuilder()).ToArray();
        var stopped = new bool[ids.Length];
        bool stream = !json && ids.Length == 1;
        var stdout = Console.Out;
        bool OnToken(int seq, int token)
        {
            var piece = decoders[seq].Push(token);
            if (piece.Length == 0) return true;
            int before = texts[seq].Length;
            texts[seq].Append(piece);
            var cut = StopAt(texts[seq], stops, Math.Max(0, before - MaxLength(stops)));
            if (cut >= 0)
            {
                if (stream && cut > before) stdout.Write(texts[seq].ToString(before, cut - before));
                texts[seq].Length = cut;
                stopped[seq] = true;
                return false;
            }
            if (stream) { stdout.Write(piece); stdout.Flush(); }
            return true;
        }

        var results = gen.Generate(ids, new GenerationOptions { MaxNewTokens = maxNew, Sampling = sampling, StopIds = s.EosIds }, OnToken);
        for (int i = 0; i < ids.Length; i++)
            if (!stopped[i])
            {
                var tail = decoders[i].Flush();
                texts[i].Append(tail);
                if (stream) stdout.Write(tail);
            }
        if (stream) stdout.WriteLine();
        var stats = gen.LastStats;
        if (Program.Verbose) Console.Error.WriteLine($"{stats} on {s.Device}");

        if (json)
        {
            Session.WriteJson(w =>
            {
                w.WriteString("device", s.Device);
                w.WriteStartArray("results");
                for (int i = 0; i < ids.Length; i++)
                {
                    var r = results[i];
                    w.WriteStartObject();
                    w.WriteString("prompt", prompts[i]);
                    Session.WriteIds(w, "prompt_ids", ids[i]);
                    Session.WriteIds(w, "ids", r.Tokens);
                    w.WriteString("text", texts[i].ToString());
                    w.WriteString("finish", r.Finish.ToString().ToLowerInvariant());
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteStartObject("timings");
                w.WriteNumber("prefill_s", results[0].PrefillSeconds);
                w.WriteNumber("decode_s", results[0].DecodeSeconds);
                int generated = results.Sum(r => r.Tokens.Length);
                w.WriteNumber("generated_tokens", generated);
                w.WriteNumber("decode_tokens_per_s", results[0].DecodeSeconds > 0 ? Math.Max(0, generated - results.Length) / results[0].DecodeSeconds : 0);
                WriteDecodeStats(w, stats);
                w.WriteEndObject();
            });
        }
        else if (!stream)
        {
            for (int i = 0; i < ids.Length; i++)
            {
                stdout.WriteLine($"--- [{i}] {prompts[i]}");
                stdout.WriteLine(texts[i].ToString());
            }
        }
        return 0;
    }

    /// <summary>--decode: "device" (the default: on-device decoding where the backend has it) or "host".</summary>
    internal static bool ParseDecode(string? value) => value switch
    {
        null or "device" => true,
        "host" => false,
        _ => throw new UsageException($"--decode: expected device or host, found '{value}'"),
    };

    /// <summary>The decode path and its counters, as fields of the current JSON object.</summary>
    internal static void WriteDecodeStats(System.Text.Json.Utf8JsonWriter w, DecodeStats stats)
    {
        w.WriteString("decode_path", stats.Path);
        w.WriteNumber("decode_steps", stats.Steps);
        w.WriteNumber("graph_replays", stats.GraphReplays);
        w.WriteNumber("graph_captures", stats.GraphCaptures);
        w.WriteNumber("launches_per_step", stats.LaunchesPerStep);
    }

    private static int MaxLength(IReadOnlyList<string> stops) => stops.Count == 0 ? 0 : stops.Max(x => x.Length);

    /// <summary>The index where the first stop string begins, searching from `from`; -1 when none occurs.</summary>
    internal static int StopAt(System.Text.StringBuilder text, IReadOnlyList<string> stops, int from)
    {
        if (stops.Count == 0) return -1;
        var s = text.ToString();
        int best = -1;
        foreach (var stop in stops)
        {
            if (stop.Length == 0) continue;
            int i = s.IndexOf(stop, from, StringComparison.Ordinal);
            if (i >= 0 && (best < 0 || i < best)) best = i;
        }
        return best;
    }
}

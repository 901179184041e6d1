using System.Text;
using System.Text.Json;
using LoRI.Text;

namespace LoRI.Runner.Verbs;

/// <summary>
/// `tokenize --model DIR (--text TEXT | --jsonl FILE) [--chat] [--bos]`: token ids as JSON arrays, reading only
/// the tokenizer files. --jsonl reads the "text" field of each line (with --chat, a line may instead hold
/// "messages": [{"role": ..., "content": ...}]) and prints one array per non-blank line. --chat renders
/// the Llama-3 chat format with a generation prompt (a --text becomes one user message); the format starts
/// with &lt;|begin_of_text|&gt;, so --bos is refused with it.
/// </summary>
public static class TokenizeVerb
{
    public static readonly Verb Verb = new("tokenize", "token ids of a text or of each line of a JSONL file",
        "tokenize --model DIR (--text TEXT | --jsonl FILE) [--chat] [--bos]", Run);

    public const int MaxLineChars = 16 << 20;

    private static int Run(Args a)
    {
        var dir = a.Require("model");
        var text = a.Get("text");
        var jsonl = a.Get("jsonl");
        bool chat = a.Flag("chat");
        bool bos = a.Flag("bos");
        a.EnsureAllUsed();
        if ((text is null) == (jsonl is null)) throw new UsageException("give exactly one of --text or --jsonl");
        if (chat && bos) throw new UsageException("--bos with --chat would add a second <|begin_of_text|>: the chat format starts with one");

        var tok = LlamaTokenizer.Load(dir);
        var o = Console.Out;
        if (text is not null)
        {
            o.WriteLine(Format(tok.Encode(chat ? ChatTemplate.Llama3([("user", text)], addGenerationPrompt: true) : text, addBos: bos)));
            return 0;
        }
        if (!File.Exists(jsonl)) throw new InvalidFileException(jsonl!, "file not found");
        int lineNo = 0;
        foreach (var line in File.ReadLines(jsonl!))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            if (line.Length > MaxLineChars) throw new InvalidFileException(jsonl!, $"line {lineNo}: {line.Length} characters, more than the limit of {MaxLineChars}");
            var input = ReadLine(jsonl!, lineNo, line, chat);
            o.WriteLine(Format(tok.Encode(input, addBos: bos)));
        }
        return 0;
    }

    private static string ReadLine(string file, int lineNo, string line, bool chat)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e) { throw new InvalidFileException(file, $"line {lineNo}: not valid JSON ({e.Message})", e); }
        using (doc)
        {
            var r = doc.RootElement;
            if (r.ValueKind != JsonValueKind.Object) throw new InvalidFileException(file, $"line {lineNo}: expected a JSON object, found {r.ValueKind}");
            if (chat && r.TryGetProperty("messages", out var msgs))
            {
                if (msgs.ValueKind != JsonValueKind.Array) throw new InvalidFileException(file, $"line {lineNo}: \"messages\" must be an array");
                var list = new List<(string, string)>();
                int i = 0;
                foreach (var m in msgs.EnumerateArray())
                {
                    if (m.ValueKind != JsonValueKind.Object
                        || !m.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String || role.GetString()!.Length == 0
                        || !m.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                        throw new InvalidFileException(file, $"line {lineNo}: messages[{i}] needs string fields \"role\" and \"content\"");
                    list.Add((role.GetString()!, content.GetString()!));
                    i++;
                }
                return ChatTemplate.Llama3(list, addGenerationPrompt: true);
            }
            if (!r.TryGetProperty("text", out var t) || t.ValueKind != JsonValueKind.String)
                throw new InvalidFileException(file, $"line {lineNo}: missing string field \"text\"{(chat ? " (or \"messages\")" : "")}");
            var s = t.GetString()!;
            return chat ? ChatTemplate.Llama3([("user", s)], addGenerationPrompt: true) : s;
        }
    }

    private static string Format(int[] ids)
    {
        var sb = new StringBuilder(ids.Length * 7 + 2).Append('[');
        for (int i = 0; i < ids.Length; i++)
        {
            if (i > 0) sb.Append(',');
            sb.Append(ids[i]);
        }
        return sb.Append(']').ToString();
    }
}

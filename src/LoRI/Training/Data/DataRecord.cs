using System.Text;
using System.Text.Json;

namespace LoRI.Training.Data;

/// <summary>One example of a JSONL training or evaluation file; Line is its 1-based line number.</summary>
public abstract record DataRecord(int Line);

/// <summary>Alpaca form: {"instruction", "input" (optional), "output"}.</summary>
public sealed record AlpacaRecord(int Line, string Instruction, string Input, string Output) : DataRecord(Line);

/// <summary>GSM8K's own form: {"question", "answer"} (the answer ends in "#### N").</summary>
public sealed record QuestionAnswerRecord(int Line, string Question, string Answer) : DataRecord(Line);

/// <summary>{"prompt", "completion"}: used verbatim, no template.</summary>
public sealed record PromptCompletionRecord(int Line, string Prompt, string Completion) : DataRecord(Line);

public sealed record ChatMessage(string Role, string Content);

/// <summary>Chat form: {"messages": [{"role", "content"}, ...]}.</summary>
public sealed record ChatRecord(int Line, IReadOnlyList<ChatMessage> Messages) : DataRecord(Line);

/// <summary>
/// Reads JSONL datasets. Each non-blank line is one JSON object in one of the forms above, recognised by
/// its keys (instruction; question; prompt; messages). Bounded: a line longer than MaxLineChars or a file
/// with more than MaxRecords records is rejected before it is held in memory. Every error names the file
/// and the line. Duplicate records are kept as they are (each line is one example, as the reference does).
/// </summary>
public static class JsonlReader
{
    public const int DefaultMaxLineChars = 16 << 20;
    public const int DefaultMaxRecords = 50_000_000;

    public static List<DataRecord> ReadFile(string path, int maxRecords = DefaultMaxRecords, int maxLineChars = DefaultMaxLineChars)
    {
        if (!File.Exists(path)) throw new InvalidFileException(path, "no such file");
        using var reader = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true, bufferSize: 1 << 16);
        return Read(reader, path, maxRecords, maxLineChars);
    }

    public static List<DataRecord> Read(TextReader reader, string name, int maxRecords = DefaultMaxRecords, int maxLineChars = DefaultMaxLineChars)
    {
        var records = new List<DataRecord>();
        var line = new StringBuilder();
        int lineNo = 0;
        var buf = new char[1 << 16];
        void Append(int from, int count)
        {
            if (line.Length + count > maxLineChars)
                throw new InvalidFileException(name, $"line {lineNo + 1}: longer than {maxLineChars} characters");
            line.Append(buf, from, count);
        }
        void Emit()
        {
            lineNo++;
            var text = line.ToString().TrimEnd('\r');
            line.Clear();
            if (string.IsNullOrWhiteSpace(text)) return;
            if (records.Count >= maxRecords)
                throw new InvalidFileException(name, $"line {lineNo}: more than {maxRecords} records");
            records.Add(Parse(text, name, lineNo));
        }
        int n;
        while ((n = reader.Read(buf, 0, buf.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < n; i++)
            {
                if (buf[i] != '\n') continue;
                Append(start, i - start);
                start = i + 1;
                Emit();
            }
            Append(start, n - start);
        }
        if (line.Length > 0) Emit();
        if (records.Count == 0) throw new InvalidFileException(name, "holds no records");
        return records;
    }

    public static DataRecord Parse(string json, string name, int lineNo)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 16 }); }
        catch (JsonException e) { throw new InvalidFileException(name, $"line {lineNo}: not valid JSON ({e.Message})", e); }
        using (doc)
        {
            var o = doc.RootElement;
            if (o.ValueKind != JsonValueKind.Object)
                throw new InvalidFileException(name, $"line {lineNo}: expected a JSON object, found {o.ValueKind}");
            if (o.TryGetProperty("messages", out var msgs)) return ParseChat(msgs, name, lineNo);
            if (o.TryGetProperty("instruction", out _))
                return new AlpacaRecord(lineNo, Str(o, "instruction", name, lineNo, true)!, Str(o, "input", name, lineNo, false) ?? "",
                                        Str(o, "output", name, lineNo, true)!);
            if (o.TryGetProperty("question", out _))
                return new QuestionAnswerRecord(lineNo, Str(o, "question", name, lineNo, true)!, Str(o, "answer", name, lineNo, true)!);
            if (o.TryGetProperty("prompt", out _))
                return new PromptCompletionRecord(lineNo, Str(o, "prompt", name, lineNo, true)!, Str(o, "completion", name, lineNo, true)!);
            throw new InvalidFileException(name,
                $"line {lineNo}: unknown record form: expected keys instruction/input/output, question/answer, prompt/completion or messages");
        }
    }

    private static ChatRecord ParseChat(JsonElement msgs, string name, int lineNo)
    {
        if (msgs.ValueKind != JsonValueKind.Array || msgs.GetArrayLength() == 0)
            throw new InvalidFileException(name, $"line {lineNo}: \"messages\" must be a non-empty array");
        var list = new List<ChatMessage>();
        int i = 0;
        foreach (var m in msgs.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object)
                throw new InvalidFileException(name, $"line {lineNo}: messages[{i}] is {m.ValueKind}, expected an object");
            var role = Str(m, "role", name, lineNo, true, $"messages[{i}].")!;
            if (role is not ("system" or "user" or "assistant"))
                throw new InvalidFileException(name, $"line {lineNo}: messages[{i}].role is '{role}', expected system, user or assistant");
            list.Add(new ChatMessage(role, Str(m, "content", name, lineNo, true, $"messages[{i}].")!));
            i++;
        }
        return new ChatRecord(lineNo, list);
    }

    private static string? Str(JsonElement o, string key, string name, int lineNo, bool required, string prefix = "")
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            if (required) throw new InvalidFileException(name, $"line {lineNo}: missing \"{prefix}{key}\"");
            return null;
        }
        if (v.ValueKind != JsonValueKind.String)
            throw new InvalidFileException(name, $"line {lineNo}: \"{prefix}{key}\" must be a string, found {v.ValueKind}");
        return v.GetString();
    }
}

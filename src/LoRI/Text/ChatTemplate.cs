using System.Text;

namespace LoRI.Text;

/// <summary>
/// Chat prompts in the Llama-3 format, rendered as text with the special tokens spelled out (encode it with
/// parseSpecial = true). Matches the chat_template of Llama-3's tokenizer_config.json:
///
///   &lt;|begin_of_text|&gt; then, per message,
///   &lt;|start_header_id|&gt;{role}&lt;|end_header_id|&gt;\n\n{content, trimmed}&lt;|eot_id|&gt;
///   and, for a generation prompt, &lt;|start_header_id|&gt;assistant&lt;|end_header_id|&gt;\n\n
///
/// A system message is just a message with role "system": no default system prompt is inserted and it is not
/// moved. Content is trimmed as Jinja's `trim` does (Python's str.strip: Unicode whitespace plus U+001C..U+001F).
/// That template appends the assistant header unconditionally; here <c>addGenerationPrompt</c> controls it
/// (true reproduces the template's output).
/// </summary>
public static class ChatTemplate
{
    public const string BeginOfText = "<|begin_of_text|>";
    public const string StartHeader = "<|start_header_id|>";
    public const string EndHeader = "<|end_header_id|>";
    public const string EndOfTurn = "<|eot_id|>";

    public static string Llama3(IEnumerable<(string Role, string Content)> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var sb = new StringBuilder();
        foreach (var (role, content) in messages)
        {
            // The template puts BOS before the first message (none without messages).
            if (sb.Length == 0) sb.Append(BeginOfText);
            if (string.IsNullOrEmpty(role)) throw new ArgumentException("a chat message has an empty role");
            sb.Append(StartHeader).Append(role).Append(EndHeader).Append("\n\n")
              .Append(PythonStrip(content ?? string.Empty)).Append(EndOfTurn);
        }
        if (addGenerationPrompt) sb.Append(StartHeader).Append("assistant").Append(EndHeader).Append("\n\n");
        return sb.ToString();
    }

    /// <summary>The header that starts an assistant reply (what a generation prompt ends with).</summary>
    public static string AssistantHeader => StartHeader + "assistant" + EndHeader + "\n\n";

    internal static bool IsPythonWhitespace(char c) => char.IsWhiteSpace(c) || c is >= '\x1C' and <= '\x1F';

    internal static string PythonStrip(string s)
    {
        int a = 0, b = s.Length;
        while (a < b && IsPythonWhitespace(s[a])) a++;
        while (b > a && IsPythonWhitespace(s[b - 1])) b--;
        return s[a..b];
    }
}

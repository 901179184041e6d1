using System.Text;
using LoRI.Text;

namespace LoRI.Training.Data;

/// <summary>How a record becomes (prompt, target) text.</summary>
public enum TemplateKind
{
    /// <summary>By the record's form: alpaca -> Alpaca, question/answer -> Gsm8k, prompt/completion -> Raw, messages -> Llama3Chat.</summary>
    Auto,
    /// <summary>The reference's training template (20-space indent).</summary>
    Alpaca,
    /// <summary>The reference's NLU *test* prompt: the Alpaca template with a 16-space indent (a train/test mismatch reproduced on purpose).</summary>
    AlpacaNluTestReference,
    Gsm8k,
    Llama3Chat,
    Raw,
}

/// <summary>A rendered example: the prompt (no loss) and the target (loss), as text.</summary>
public readonly record struct PromptTarget(string Prompt, string Target);

/// <summary>
/// The prompt templates of lori-method.md section 4, with their exact whitespace, and the Llama-3 chat format.
/// </summary>
public static class PromptTemplates
{
    public const int ReferenceIndent = 20;
    public const int NluTestIndent = 16;

    public const string Gsm8kInstruction = "\nAnswer the above question. First think step by step and then answer the final number.\n";
    public const string Gsm8kFinalAnswer = "The final answer is: ";

    /// <summary>
    /// The Alpaca prompt. Note the space after "request." in the no-input form only, and the indent after
    /// every section break including the last, so the response starts after `indent` spaces.
    /// </summary>
    public static string Alpaca(string instruction, string input, int indent = ReferenceIndent)
    {
        var sp = new string(' ', indent);
        var sb = new StringBuilder();
        if (string.IsNullOrEmpty(input))
        {
            sb.Append("Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n");
            sb.Append(sp).Append("### Instruction:\n").Append(sp).Append(instruction).Append("\n\n");
        }
        else
        {
            sb.Append("Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n");
            sb.Append(sp).Append("### Instruction:\n").Append(sp).Append(instruction).Append("\n\n");
            sb.Append(sp).Append("### Input:\n").Append(sp).Append(input).Append("\n\n");
        }
        sb.Append(sp).Append("### Response:\n").Append(sp);
        return sb.ToString();
    }

    public static string Gsm8kPrompt(string question) => question + Gsm8kInstruction;

    /// <summary>GSM8K's target: the dataset answer with "####" replaced by "The final answer is: " (literally, as the reference does).</summary>
    public static string Gsm8kTarget(string answer) => answer.Replace("####", Gsm8kFinalAnswer);

    /// <summary>
    /// Llama-3 instruct format (LoRI.Text.ChatTemplate.Llama3, the one implementation of it): the prompt is every
    /// message but the last, followed by the assistant header; the target is the last message, which must be
    /// the assistant's, as the template renders it (content trimmed, then &lt;|eot_id|&gt;). Earlier assistant
    /// turns are context without loss.
    /// </summary>
    public static PromptTarget Llama3Chat(IReadOnlyList<ChatMessage> messages)
    {
        if (messages.Count == 0 || messages[^1].Role != "assistant")
            throw new ArgumentException("a chat example must end with an assistant message (its content is the target)");
        var all = messages.Select(m => (m.Role, m.Content)).ToList();
        string prompt = messages.Count == 1
            ? ChatTemplate.BeginOfText + ChatTemplate.AssistantHeader
            : ChatTemplate.Llama3(all.Take(all.Count - 1), addGenerationPrompt: true);
        string full = ChatTemplate.Llama3(all, addGenerationPrompt: false);
        if (!full.StartsWith(prompt, StringComparison.Ordinal))
            throw new InvalidOperationException("the chat template's prompt is not a prefix of the whole conversation");
        return new PromptTarget(prompt, full[prompt.Length..]);
    }

    public static PromptTarget Render(DataRecord record, TemplateKind kind = TemplateKind.Auto)
    {
        if (kind == TemplateKind.Auto)
            kind = record switch
            {
                AlpacaRecord => TemplateKind.Alpaca,
                QuestionAnswerRecord => TemplateKind.Gsm8k,
                PromptCompletionRecord => TemplateKind.Raw,
                ChatRecord => TemplateKind.Llama3Chat,
                _ => throw new ArgumentException($"unknown record type {record.GetType().Name}"),
            };
        return (kind, record) switch
        {
            (TemplateKind.Alpaca, AlpacaRecord a) => new(Alpaca(a.Instruction, a.Input), a.Output),
            (TemplateKind.AlpacaNluTestReference, AlpacaRecord a) => new(Alpaca(a.Instruction, a.Input, NluTestIndent), a.Output),
            (TemplateKind.Alpaca, QuestionAnswerRecord q) => new(Alpaca(q.Question, ""), q.Answer),
            (TemplateKind.Gsm8k, QuestionAnswerRecord q) => new(Gsm8kPrompt(q.Question), Gsm8kTarget(q.Answer)),
            (TemplateKind.Gsm8k, AlpacaRecord a) => new(Gsm8kPrompt(a.Instruction), Gsm8kTarget(a.Output)),
            (TemplateKind.Raw, PromptCompletionRecord p) => new(p.Prompt, p.Completion),
            (TemplateKind.Alpaca, PromptCompletionRecord p) => new(Alpaca(p.Prompt, ""), p.Completion),
            (TemplateKind.Llama3Chat, ChatRecord c) => Llama3Chat(c.Messages),
            (TemplateKind.Llama3Chat, AlpacaRecord a) => Llama3Chat(
                [new("user", string.IsNullOrEmpty(a.Input) ? a.Instruction : a.Instruction + "\n\n" + a.Input), new("assistant", a.Output)]),
            (TemplateKind.Llama3Chat, PromptCompletionRecord p) => Llama3Chat([new("user", p.Prompt), new("assistant", p.Completion)]),
            _ => throw new ArgumentException($"line {record.Line}: template {kind} does not apply to a {record.GetType().Name}"),
        };
    }

    public static TemplateKind ParseKind(string name) => name.ToLowerInvariant() switch
    {
        "auto" => TemplateKind.Auto,
        "alpaca" => TemplateKind.Alpaca,
        "alpaca-nlu-test-reference" => TemplateKind.AlpacaNluTestReference,
        "gsm8k" => TemplateKind.Gsm8k,
        "chat" or "llama3-chat" => TemplateKind.Llama3Chat,
        "raw" => TemplateKind.Raw,
        _ => throw new ArgumentException($"unknown template '{name}': expected auto, alpaca, alpaca-nlu-test-reference, gsm8k, chat or raw"),
    };
}

using LoRI.Training.Data;

namespace LoRI.Tests.Training;

public class DataTests
{
    private static List<DataRecord> Read(string text, int maxRecords = 1000, int maxLine = 1 << 20) =>
        JsonlReader.Read(new StringReader(text), "data.jsonl", maxRecords, maxLine);

    [Test]
    public void Jsonl_ReadsEveryForm_SkipsBlankLines_KeepsLineNumbers()
    {
        var recs = Read(
            "{\"instruction\": \"Add\", \"input\": \"1 2\", \"output\": \"3\"}\r\n" +
            "\n" +
            "{\"instruction\": \"Say hi\", \"output\": \"hi\"}\n" +
            "{\"question\": \"2+2?\", \"answer\": \"4\\n#### 4\"}\n" +
            "{\"prompt\": \"a\", \"completion\": \"b\"}\n" +
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}");
        Assert.That(recs, Has.Count.EqualTo(5));
        Assert.That(recs[0], Is.EqualTo(new AlpacaRecord(1, "Add", "1 2", "3")));
        Assert.That(recs[1], Is.EqualTo(new AlpacaRecord(3, "Say hi", "", "hi")));
        Assert.That(recs[2], Is.EqualTo(new QuestionAnswerRecord(4, "2+2?", "4\n#### 4")));
        Assert.That(recs[3], Is.EqualTo(new PromptCompletionRecord(5, "a", "b")));
        var chat = (ChatRecord)recs[4];
        Assert.That(chat.Line, Is.EqualTo(6));
        Assert.That(chat.Messages, Is.EqualTo(new[] { new ChatMessage("user", "x"), new ChatMessage("assistant", "y") }));
    }

    [TestCase("{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\"}", "line 2: missing \"output\"")]
    [TestCase("{\"instruction\": \"a\", \"output\": \"b\"}\n\n{oops", "line 3: not valid JSON")]
    [TestCase("[1, 2]", "line 1: expected a JSON object")]
    [TestCase("{\"instruction\": 5, \"output\": \"b\"}", "line 1: \"instruction\" must be a string, found Number")]
    [TestCase("{\"text\": \"a\"}", "line 1: unknown record form")]
    [TestCase("{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}", "line 1: messages[0].role is 'bot'")]
    [TestCase("{\"messages\": []}", "line 1: \"messages\" must be a non-empty array")]
    [TestCase("\n\n", "holds no records")]
    public void Jsonl_BadInput_NamesFileAndLine(string text, string expected)
    {
        var e = Assert.Throws<InvalidFileException>(() => Read(text))!;
        Assert.That(e.Message, Does.StartWith("data.jsonl: "));
        Assert.That(e.Message, Does.Contain(expected));
    }

    [Test]
    public void Jsonl_IsBounded()
    {
        var longLine = "{\"prompt\": \"" + new string('x', 200) + "\", \"completion\": \"y\"}";
        var e = Assert.Throws<InvalidFileException>(() => Read("{\"prompt\": \"a\", \"completion\": \"b\"}\n" + longLine, maxLine: 100))!;
        Assert.That(e.Message, Does.Contain("line 2: longer than 100 characters"));
        var many = string.Concat(Enumerable.Repeat("{\"prompt\": \"a\", \"completion\": \"b\"}\n", 4));
        Assert.That(Assert.Throws<InvalidFileException>(() => Read(many, maxRecords: 3))!.Message, Does.Contain("line 4: more than 3 records"));
    }

    [Test]
    public void Alpaca_NoInput_ExactWhitespace()
    {
        const string sp20 = "                    "; // 20 spaces
        Assert.That(sp20.Length, Is.EqualTo(20));
        var expected = "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n" +
                       sp20 + "### Instruction:\n" + sp20 + "Name a color.\n\n" + sp20 + "### Response:\n" + sp20;
        Assert.That(PromptTemplates.Alpaca("Name a color.", ""), Is.EqualTo(expected));
        var (p, t) = PromptTemplates.Render(new AlpacaRecord(1, "Name a color.", "", "Red."));
        Assert.That(p, Is.EqualTo(expected));
        Assert.That(t, Is.EqualTo("Red."));
    }

    [Test]
    public void Alpaca_WithInput_ExactWhitespace_NoSpaceAfterRequest()
    {
        const string sp20 = "                    ";
        var expected = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n" +
                       sp20 + "### Instruction:\n" + sp20 + "Sum.\n\n" + sp20 + "### Input:\n" + sp20 + "1 2\n\n" + sp20 + "### Response:\n" + sp20;
        Assert.That(PromptTemplates.Alpaca("Sum.", "1 2"), Is.EqualTo(expected));
    }

    [Test]
    public void Alpaca_NluTestReference_Uses16Spaces()
    {
        const string sp16 = "                ";
        Assert.That(sp16.Length, Is.EqualTo(16));
        var (p, _) = PromptTemplates.Render(new AlpacaRecord(1, "Q?", "", "the correct answer is true"), TemplateKind.AlpacaNluTestReference);
        Assert.That(p, Is.EqualTo("Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n" +
                                  sp16 + "### Instruction:\n" + sp16 + "Q?\n\n" + sp16 + "### Response:\n" + sp16));
    }

    [Test]
    public void Gsm8k_PromptAndTarget()
    {
        var (p, t) = PromptTemplates.Render(new QuestionAnswerRecord(1, "What is 6*7?", "6*7 = <<6*7=42>>42\n#### 42"));
        Assert.That(p, Is.EqualTo("What is 6*7?\nAnswer the above question. First think step by step and then answer the final number.\n"));
        // The literal replacement keeps the dataset's space after "####".
        Assert.That(t, Is.EqualTo("6*7 = <<6*7=42>>42\nThe final answer is:  42"));
    }

    [Test]
    public void Llama3Chat_PromptEndsAtTheAssistantHeader()
    {
        var (p, t) = PromptTemplates.Render(new ChatRecord(1, [new("system", "Be brief. "), new("user", " Hi"), new("assistant", "Hello!\n")]));
        Assert.That(p, Is.EqualTo("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
                                  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
        Assert.That(t, Is.EqualTo("Hello!<|eot_id|>"));
        Assert.Throws<ArgumentException>(() => PromptTemplates.Render(new ChatRecord(1, [new("user", "x")])));
    }

    // A stand-in tokenizer: one token per character, id = the character code.
    private static int[] Chars(string s) => s.Select(c => (int)c).ToArray();

    [Test]
    public void Example_ReferencePreset_NoBos_EosAppended()
    {
        var ex = ExampleBuilder.Build("ab", "cd", Chars, new ExampleOptions { EosId = 9 });
        Assert.That(ex.Tokens, Is.EqualTo(new[] { 'a', 'b', 'c', 'd', 9 }));
        Assert.That(ex.PromptLength, Is.EqualTo(2));
        var bos = ExampleBuilder.Build("ab", "cd", Chars, new ExampleOptions { EosId = 9, AddBos = true, BosId = 7 });
        Assert.That(bos.Tokens, Is.EqualTo(new[] { 7, 'a', 'b', 'c', 'd', 9 }));
        Assert.That(bos.PromptLength, Is.EqualTo(3));
    }

    [TestCase(300, 299, 256, 256)]   // 300 + 300 > 512: both cut to 256 (the EOS is cut off)
    [TestCase(100, 449, 100, 256)]   // 100 + 450 > 512: the short prompt stays, the response is cut to 256
    [TestCase(400, 111, 400, 112)]   // 400 + 112 = 512: fits, nothing cut
    [TestCase(400, 112, 256, 113)]   // 513: prompt cut to 256, response (113) already short enough
    public void Example_Truncation_FollowsTheReferenceRule(int promptLen, int targetLen, int expPrompt, int expResponse)
    {
        var ex = ExampleBuilder.Build(new string('p', promptLen), new string('r', targetLen), Chars, new ExampleOptions { EosId = 9 });
        Assert.That(ex.PromptLength, Is.EqualTo(expPrompt));
        Assert.That(ex.ResponseLength, Is.EqualTo(expResponse));
        Assert.That(ex.Tokens.Take(expPrompt), Is.All.EqualTo((int)'p'));
        bool eosKept = expResponse == targetLen + 1;
        Assert.That(ex.Tokens[^1], Is.EqualTo(eosKept ? 9 : 'r'));
    }

    [Test]
    public void Batch_TargetsAreNextResponseTokens_WeightsFollowTheReduction()
    {
        var a = new TrainingExample([1, 2, 3, 4], PromptLength: 2, Line: 1);   // loss on 3, 4
        var b = new TrainingExample([5, 6, 7], PromptLength: 1, Line: 2);      // loss on 6, 7
        var batch = new Batch([a, b], padId: 0, LossReduction.SumTokensMeanSequences);
        Assert.That(batch.SeqLen, Is.EqualTo(4));
        Assert.That(batch.Tokens, Is.EqualTo(new[] { 1, 2, 3, 4, 5, 6, 7, 0 }));
        Assert.That(batch.Targets, Is.EqualTo(new[] { -1, 3, 4, -1, 6, 7, -1, -1 }));
        Assert.That(batch.Positions, Is.EqualTo(new[] { 0, 1, 2, 3, 0, 1, 2, 3 }));
        Assert.That(batch.Weights, Is.EqualTo(new[] { 0, 0.5f, 0.5f, 0, 0.5f, 0.5f, 0, 0 }));
        Assert.That(batch.TargetTokens, Is.EqualTo(4));
        var mean = new Batch([a, b], padId: 0, LossReduction.MeanTokens);
        Assert.That(mean.Weights, Is.EqualTo(new[] { 0, 0.25f, 0.25f, 0, 0.25f, 0.25f, 0, 0 }));
    }

    [Test]
    public void DataOrder_IsAPermutation_ReproducibleFromSeedAndEpoch()
    {
        var p0 = DataOrder.EpochPermutation(101, 42, 0);
        Assert.That(p0.OrderBy(i => i), Is.EqualTo(Enumerable.Range(0, 101)));
        Assert.That(DataOrder.EpochPermutation(101, 42, 0), Is.EqualTo(p0));
        Assert.That(DataOrder.EpochPermutation(101, 42, 1), Is.Not.EqualTo(p0));
        Assert.That(DataOrder.EpochPermutation(101, 43, 0), Is.Not.EqualTo(p0));
        Assert.That(DataOrder.BatchesPerEpoch(101, 32), Is.EqualTo(3));
        Assert.That(DataOrder.BatchesPerEpoch(101, 32, dropLast: false), Is.EqualTo(4));
        Assert.That(DataOrder.BatchIndices(p0, 32, 2).ToArray(), Is.EqualTo(p0[64..96]));
    }

    [Test]
    public void SplitMix64_MatchesItsPublishedFirstOutput()
    {
        // SplitMix64 seeded with 0: first output 0xE220A8397B1DCDAF (the reference value of the algorithm).
        var r = new SplitMix64(0);
        Assert.That(r.Next(), Is.EqualTo(0xE220A8397B1DCDAFUL));
    }
}

using LoRI.Evaluation;

namespace LoRI.Tests.Evaluation;

public class AnswerExtractionTests
{
    private const string Prompt =
        "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n" +
        "                ### Instruction:\n                Is the sky green? Answer format: true/false\n\n" +
        "                ### Response:\n                ";

    [Test]
    public void Choice_TakesTheFirstLabelAfterTheLastResponseMarker()
    {
        // The instruction mentions "true/false" before the marker; only the response counts, and in it the first match.
        Assert.That(AnswerExtraction.ExtractChoice(Prompt + "the correct answer is false, not true", LabelSet.TrueFalse), Is.EqualTo("false"));
        // Two responses (the model wrote another prompt): the last one wins.
        var twice = Prompt + "the correct answer is true\n### Response: false";
        Assert.That(AnswerExtraction.ExtractChoice(twice, LabelSet.TrueFalse), Is.EqualTo("false"));
    }

    [Test]
    public void Choice_IsCaseSensitiveAndMissingIsWrong()
    {
        Assert.That(AnswerExtraction.ExtractChoice(Prompt + "True", LabelSet.TrueFalse), Is.Null);
        Assert.That(AnswerExtraction.ChoiceCorrect(Prompt + "I am not sure", "the correct answer is true", LabelSet.TrueFalse), Is.False);
    }

    [Test]
    public void Choice_CommasAreRemovedBeforeMatching()
    {
        // "answer,3" becomes "answer3" once commas go, as in the reference.
        Assert.That(AnswerExtraction.ExtractChoice("### Response: answer,3", LabelSet.Answer), Is.EqualTo("answer3"));
    }

    [TestCase("boolq", "the correct answer is true", "true")]
    [TestCase("piqa", "the correct answer is solution2", "solution2")]
    [TestCase("ARC-Challenge", "the correct answer is answer4", "answer4")]
    [TestCase("social_i_qa", "the correct answer is answer1", "answer1")]
    [TestCase("hellaswag", "the correct answer is ending3", "ending3")]
    [TestCase("winogrande", "the correct answer is option2", "option2")]
    public void Choice_GoldAndPredictionPerTask(string task, string gold, string label)
    {
        var set = LabelSet.ForTask(task);
        Assert.That(AnswerExtraction.ChoiceGold(gold, set), Is.EqualTo(label));
        Assert.That(LabelSet.FromGold(gold), Is.SameAs(set));
        Assert.That(AnswerExtraction.ChoiceCorrect("### Response:\n the correct answer is " + label, gold, set), Is.True);
    }

    [Test]
    public void Choice_AnswerSetStopsAtFive_EndingAtFour()
    {
        Assert.That(AnswerExtraction.ExtractChoice("### Response: answer6 answer2", LabelSet.Answer), Is.EqualTo("answer2"));
        Assert.That(AnswerExtraction.ExtractChoice("### Response: ending5", LabelSet.Ending), Is.Null);
        Assert.Throws<ArgumentException>(() => LabelSet.ForTask("mmlu"));
    }

    [TestCase("Step 1: 3 + 4 = 7.\nThe final answer is: 7", 7)]
    [TestCase("The total is 1,234 dollars.", 1234)]                          // commas in numbers are removed
    [TestCase("The final answer is: 1,000,000. Check: 999 + 1", 1000000)]    // first number after the marker, not the last
    [TestCase("It drops by 5 so we get -12", -12)]
    [TestCase("The final answer is: -3.5", -3.5)]
    [TestCase("costs 18.00", 18)]                                            // compared as numbers: 18.00 == 18
    [TestCase("we have 4 apples and then 10.", 10)]                          // a trailing period is not a decimal part
    [TestCase("### Response: 2 cats\n### Response: 9 dogs", 9)]
    public void Gsm8k_ExtractsTheReferenceNumber(string text, double expected) =>
        Assert.That(AnswerExtraction.ExtractNumber(text), Is.EqualTo((decimal)expected));

    [Test]
    public void Gsm8k_MarkerWithoutNumber_FallsBackToTheLastNumber()
    {
        Assert.That(AnswerExtraction.ExtractNumber("we got 12 and 13. The final answer is: unknown"), Is.EqualTo(13m));
        Assert.That(AnswerExtraction.ExtractNumber("no digits here"), Is.Null);
    }

    [Test]
    public void Gsm8k_GoldFromDatasetOrTemplateForm()
    {
        Assert.That(AnswerExtraction.GsmGold("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72"), Is.EqualTo(72m));
        Assert.That(AnswerExtraction.GsmGold("48 + 24 = 72\nThe final answer is: 72"), Is.EqualTo(72m));
        Assert.That(AnswerExtraction.Gsm8kCorrect("so 72.0 in all. The final answer is: 72.0", "#### 72"), Is.True);
        Assert.That(AnswerExtraction.Gsm8kCorrect("The final answer is: 7,2", "#### 72"), Is.True);
        Assert.That(AnswerExtraction.Gsm8kCorrect("The final answer is: 71", "#### 72"), Is.False);
    }

    [Test]
    public void ExactMatch_IgnoresSurroundingWhitespaceOnly()
    {
        Assert.That(AnswerExtraction.ExactMatch("  Paris\n", "Paris"), Is.True);
        Assert.That(AnswerExtraction.ExactMatch("paris", "Paris"), Is.False);
    }
}

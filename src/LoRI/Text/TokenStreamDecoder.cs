using System.Text;

namespace LoRI.Text;

/// <summary>
/// Turns token ids, pushed one at a time as they are generated, into text as soon as it is complete.
/// A token may end in the middle of a multi-byte UTF-8 character (Llama-3 splits many emoji and CJK
/// characters across tokens); those trailing bytes are held back until the character is complete.
/// Bytes that can never become valid UTF-8 are released at once as U+FFFD, so the concatenation of
/// everything returned (plus <see cref="Flush"/>) equals <see cref="LlamaTokenizer.Decode"/> of all the ids.
/// Reuses one byte buffer; Push(id) allocates only the returned string, Push(id, Span&lt;char&gt;) nothing.
/// </summary>
public sealed class TokenStreamDecoder
{
    private readonly LlamaTokenizer _tokenizer;
    private readonly bool _skipSpecial;
    private byte[] _pending = new byte[64];
    private int _count;

    public TokenStreamDecoder(LlamaTokenizer tokenizer, bool skipSpecial = false)
    {
        _tokenizer = tokenizer;
        _skipSpecial = skipSpecial;
    }

    /// <summary>Bytes held back because they may start a character the next token completes.</summary>
    public int PendingBytes => _count;

    /// <summary>Adds one token; returns the text that became complete (often empty mid-character).</summary>
    public string Push(int id)
    {
        int complete = Append(id);
        if (complete == 0) return string.Empty;
        var text = Encoding.UTF8.GetString(_pending, 0, complete);
        Consume(complete);
        return text;
    }

    /// <summary>
    /// Adds one token and writes the text that became complete into <paramref name="destination"/>; returns the
    /// number of chars written. Allocates nothing. A destination of <see cref="MaxCharsPerPush"/> chars always suffices.
    /// </summary>
    public int Push(int id, Span<char> destination)
    {
        int complete = Append(id);
        if (complete == 0) return 0;
        if (destination.Length < complete && destination.Length < Encoding.UTF8.GetCharCount(_pending.AsSpan(0, complete)))
            throw new ArgumentException($"destination holds {destination.Length} chars; this token completes more");
        int written = Encoding.UTF8.GetChars(_pending.AsSpan(0, complete), destination);
        Consume(complete);
        return written;
    }

    /// <summary>Chars one push can produce at most: a token's bytes plus 3 held back, one char per byte at most.</summary>
    public int MaxCharsPerPush => _tokenizer.MaxTokenBytes + 3;

    private int Append(int id)
    {
        var bytes = _tokenizer.TokenBytes(id);
        if (_skipSpecial && _tokenizer.IsSpecial(id)) return 0;
        if (_count + bytes.Length > _pending.Length)
            Array.Resize(ref _pending, Math.Max(_pending.Length * 2, _count + bytes.Length));
        bytes.CopyTo(_pending.AsSpan(_count));
        _count += bytes.Length;
        return _count - IncompleteTail(_pending.AsSpan(0, _count));
    }

    private void Consume(int complete)
    {
        _pending.AsSpan(complete, _count - complete).CopyTo(_pending);
        _count -= complete;
    }

    /// <summary>Releases whatever is held back (an unfinished character becomes U+FFFD) and resets.</summary>
    public string Flush()
    {
        var text = _count == 0 ? string.Empty : Encoding.UTF8.GetString(_pending, 0, _count);
        _count = 0;
        return text;
    }

    /// <summary>
    /// Length of the suffix that is a valid but unfinished UTF-8 sequence (a lead byte followed by fewer
    /// continuation bytes than it announces, each within the ranges UTF-8 allows), else 0.
    /// </summary>
    internal static int IncompleteTail(ReadOnlySpan<byte> s)
    {
        for (int k = 1; k <= Math.Min(3, s.Length); k++)
        {
            byte b = s[^k];
            if ((b & 0xC0) == 0x80) continue; // continuation byte: keep looking for the lead
            int need = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xC2 && b <= 0xDF ? 2 : 0;
            if (need <= k) return 0;
            // The second byte of E0, ED, F0, F4 sequences has a narrower range (no overlongs, surrogates, > U+10FFFF).
            if (k >= 2)
            {
                byte c = s[^(k - 1)];
                bool ok = b switch
                {
                    0xE0 => c >= 0xA0,
                    0xED => c <= 0x9F,
                    0xF0 => c >= 0x90,
                    0xF4 => c <= 0x8F,
                    _ => true,
                };
                if (!ok) return 0;
            }
            return k;
        }
        return 0;
    }
}

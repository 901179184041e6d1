namespace LoRI.Text;

/// <summary>
/// GPT-2's reversible byte-to-character table, used by byte-level BPE vocabularies (GPT-2, Llama-3) to spell
/// arbitrary bytes as printable characters in tokenizer.json: the 188 bytes that are printable Latin-1
/// ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 (controls, space, DEL, NBSP, soft
/// hyphen) are given the characters U+0100, U+0101, ... in byte order (so space is 'Ġ' U+0120, '\n' is 'Ċ').
/// </summary>
public static class ByteLevel
{
    private static readonly char[] ByteToChar = BuildByteToChar();
    private static readonly short[] CharToByte = BuildCharToByte();

    private static bool IsPrintable(int b) => b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;

    private static char[] BuildByteToChar()
    {
        var t = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++) t[b] = IsPrintable(b) ? (char)b : (char)next++;
        return t;
    }

    private static short[] BuildCharToByte()
    {
        var t = new short[512];
        Array.Fill(t, (short)-1);
        for (int b = 0; b < 256; b++) t[ByteToChar[b]] = (short)b;
        return t;
    }

    public static char Char(byte b) => ByteToChar[b];

    /// <summary>The byte a table character stands for, or -1 when the character is not in the table.</summary>
    public static int Byte(char c) => c < CharToByte.Length ? CharToByte[c] : -1;

    /// <summary>Spells bytes as table characters.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        return string.Create(bytes.Length, bytes.ToArray(), static (dst, src) =>
        {
            for (int i = 0; i < src.Length; i++) dst[i] = ByteToChar[src[i]];
        });
    }

    /// <summary>The bytes a token spelled in table characters stands for; null when a character is outside the table.</summary>
    public static byte[]? TryDecode(string token)
    {
        var r = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            int b = Byte(token[i]);
            if (b < 0) return null;
            r[i] = (byte)b;
        }
        return r;
    }
}

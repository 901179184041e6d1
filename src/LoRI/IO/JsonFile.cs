using System.Text;
using System.Text.Json;

namespace LoRI.IO;

/// <summary>Parses untrusted JSON files: size-bounded before reading, UTF-8 checked, errors name the file.</summary>
internal static class JsonFile
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static JsonDocument Read(string path, long maxBytes, string what = "file")
    {
        long len;
        try { len = new FileInfo(path).Length; }
        catch (IOException e) { throw new InvalidFileException(path, $"cannot read {what}: {e.Message}", e); }
        if (len > maxBytes) throw new InvalidFileException(path, $"{what} is {len} bytes, more than the limit of {maxBytes}");
        return Parse(path, File.ReadAllBytes(path), what);
    }

    /// <summary>Parses <paramref name="utf8"/> (a leading UTF-8 byte-order mark is skipped) as one JSON document.</summary>
    public static JsonDocument Parse(string path, ReadOnlyMemory<byte> utf8, string what = "file")
    {
        if (utf8.Span.StartsWith("\xEF\xBB\xBF"u8)) utf8 = utf8[3..];
        // JsonDocument checks UTF-8 only when a string is materialised; check it all up front instead.
        try { StrictUtf8.GetCharCount(utf8.Span); }
        catch (DecoderFallbackException e)
        {
            throw new InvalidFileException(path, $"{what} is not valid JSON: invalid UTF-8 at byte {e.Index}", e);
        }
        try { return JsonDocument.Parse(utf8, new JsonDocumentOptions { MaxDepth = 64 }); }
        catch (JsonException e) { throw new InvalidFileException(path, $"{what} is not valid JSON: {e.Message}", e); }
    }
}

namespace LoRI;

/// <summary>Base of every error the library reports to a user. The CLI prints Message on one line.</summary>
public class LoRIException : Exception
{
    public LoRIException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>A file (checkpoint, adapter, config, dataset) that is malformed or does not fit. Message names the file.</summary>
public class InvalidFileException : LoRIException
{
    public string Path { get; }
    public InvalidFileException(string path, string message, Exception? inner = null)
        : base($"{path}: {message}", inner) => Path = path;
}

/// <summary>Shapes or configuration that disagree (a weight that does not fit the config, an adapter that does not fit the model).</summary>
public class ShapeMismatchException : LoRIException
{
    public ShapeMismatchException(string message) : base(message) { }
}

/// <summary>A feature a file asks for that we deliberately do not support (e.g. DoRA). Message says so.</summary>
public class UnsupportedException : LoRIException
{
    public UnsupportedException(string message) : base(message) { }
}

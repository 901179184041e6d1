namespace LoRI.Cuda.Driver;

/// <summary>The driver API's status codes we name in messages (the rest print as numbers).</summary>
public enum CuResult
{
    Success = 0,
    InvalidValue = 1,
    OutOfMemory = 2,
    NotInitialized = 3,
    Deinitialized = 4,
    NoDevice = 100,
    InvalidDevice = 101,
    InvalidImage = 200,
    InvalidContext = 201,
    InvalidPtx = 218,
    UnsupportedPtxVersion = 222,
    FileNotFound = 301,
    InvalidHandle = 400,
    NotFound = 500,
    NotReady = 600,
    IllegalAddress = 700,
    LaunchOutOfResources = 701,
    LaunchTimeout = 702,
    LaunchFailed = 719,
    NotSupported = 801,
    Unknown = 999,
}

/// <summary>A failed driver (or emulator) call: the call's source text, the error's name and description.</summary>
public sealed class CudaException : LoRIException
{
    public CuResult Result { get; }
    public string Call { get; }

    public CudaException(CuResult result, string call, string detail)
        : base($"{call} failed: {detail}")
    {
        Result = result;
        Call = call;
    }
}

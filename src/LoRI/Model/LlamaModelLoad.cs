using LoRI.Backend;
using LoRI.IO;

namespace LoRI.Model;

public sealed partial class LlamaModel
{
    /// <summary>
    /// Opens a HF-layout model folder (config.json, model.safetensors or shards) on a backend. The checkpoint
    /// stays memory-mapped for the model's lifetime: the CPU backend computes straight from the mapped bytes,
    /// a device backend copies each tensor once.
    /// </summary>
    public static LlamaModel Load(string modelDir, IBackend backend, int maxTokensPerForward = 512)
    {
        var config = LlamaConfig.Load(modelDir);
        var ckpt = Checkpoint.Open(modelDir);
        try
        {
            config.Validate(ckpt);
            var weights = LlamaWeights.Load(config, backend, name =>
            {
                var (file, entry) = ckpt.Get(name);
                return new HostTensor(file.Pointer(entry), entry.DType, entry.Shape, null);
            });
            return new LlamaModel(config, backend, weights, maxTokensPerForward) { _owner = ckpt };
        }
        catch
        {
            ckpt.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes a model folder: config.json and model.safetensors from named tensors (tokenizer files are the
    /// caller's). Each file is written to a temporary name and renamed.
    /// </summary>
    public static void Save(string modelDir, LlamaConfig config, IEnumerable<NamedTensor> tensors)
    {
        Directory.CreateDirectory(modelDir);
        var w = new SafeTensorsWriter();
        w.Metadata["format"] = "pt";
        foreach (var t in tensors) w.Add(t.Name, t.DType, t.Shape, t.Data);
        w.Write(Path.Combine(modelDir, Checkpoint.SingleFileName));
        config.Save(modelDir);
    }
}

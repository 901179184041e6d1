namespace LoRI.Model;

/// <summary>Llama-3.1+ `rope_scaling` of type "llama3": rescales the low rotary frequencies for long context.</summary>
public sealed record RopeScaling(float Factor, float LowFreqFactor, float HighFreqFactor, int OriginalMaxPositionEmbeddings);

/// <summary>
/// The hyperparameters of a LlamaForCausalLM, as config.json states them (HF field names in comments).
/// Parsing and validation of config.json / generation_config.json live in IO (LlamaConfig.Load).
/// </summary>
public sealed partial record LlamaConfig
{
    public int HiddenSize { get; init; }              // hidden_size            (4096 for 8B)
    public int IntermediateSize { get; init; }        // intermediate_size      (14336)
    public int NumLayers { get; init; }               // num_hidden_layers      (32)
    public int NumHeads { get; init; }                // num_attention_heads    (32)
    public int NumKvHeads { get; init; }              // num_key_value_heads    (8)
    public int HeadDim { get; init; }                 // head_dim, else hidden_size / num_attention_heads
    public float RmsNormEps { get; init; } = 1e-5f;   // rms_norm_eps
    public float RopeTheta { get; init; } = 500000f;  // rope_theta
    public RopeScaling? RopeScaling { get; init; }    // rope_scaling (type llama3 only)
    public int VocabSize { get; init; }               // vocab_size             (128256)
    public int MaxPositionEmbeddings { get; init; } = 8192; // max_position_embeddings
    public bool TieWordEmbeddings { get; init; }      // tie_word_embeddings
    public int? BosTokenId { get; init; }             // bos_token_id
    public int[] EosTokenIds { get; init; } = [];     // eos_token_id (int or list), merged with generation_config.json's
    public string TorchDtype { get; init; } = "bfloat16"; // torch_dtype

    public int QDim => NumHeads * HeadDim;
    public int KvDim => NumKvHeads * HeadDim;

    /// <summary>Parameters of the whole model (embeddings counted once when tied).</summary>
    public long ParameterCount
    {
        get
        {
            long d = HiddenSize, f = IntermediateSize;
            long perLayer = d * QDim + 2 * d * KvDim + QDim * d + 3 * d * f + 2 * d;
            long embed = (long)VocabSize * d;
            return NumLayers * perLayer + d + embed + (TieWordEmbeddings ? 0 : embed);
        }
    }

    /// <summary>The rotary inverse frequencies [HeadDim/2], with llama3 scaling applied when configured (float32, as HF computes them).</summary>
    public float[] RopeInvFreq()
    {
        int half = HeadDim / 2;
        var inv = new float[half];
        for (int i = 0; i < half; i++)
            inv[i] = 1f / MathF.Pow(RopeTheta, (2 * i) / (float)HeadDim);
        if (RopeScaling is { } s)
        {
            // transformers' _compute_llama3_parameters: long wavelengths divided by factor,
            // short ones kept, a smooth interpolation between.
            float lowFreqWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
            float highFreqWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
            for (int i = 0; i < half; i++)
            {
                float wavelen = 2f * MathF.PI / inv[i];
                if (wavelen > lowFreqWavelen) inv[i] /= s.Factor;
                else if (wavelen >= highFreqWavelen)
                {
                    float smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    inv[i] = (1 - smooth) * inv[i] / s.Factor + smooth * inv[i];
                }
            }
        }
        return inv;
    }
}

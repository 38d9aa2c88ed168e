"""A ViT-B-scale tri-modal model for the GPU benchmarks (`experiments/bench/gpu.sh`).

Three ViT-B/16-sized encoders (width 768, 12 heads, MLP 3072, 12 blocks each, ~85M parameters
per encoder) on text (128 tokens), 224x224 images (196 patches of 16x16) and 1 s of 16 kHz audio
(98 frames of 128 mels -> 24 x 8 = 192 patches of 4 frames x 16 mels), 8 fusion tokens, batch 128,
bfloat16
compute (float32 parameters and optimizer state). Everything else is
`experiments/configs/trimodal.py`; the benchmarks feed synthetic batches of these shapes.
"""

import pathlib

import ml_collections

from imro_jax.train.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(pathlib.Path(__file__).with_name("trimodal.py"))
    config.data.batch_size = 128
    model = config.model
    model.dim, model.num_heads, model.mlp_dim, model.depth, model.fusion_tokens = 768, 12, 3072, 12, 8
    model.modalities.text = dict(encoder="text", vocab_size=32000, max_len=128)
    model.modalities.vision = dict(encoder="vit", image_size=224, patch_size=16, channels=3)
    model.modalities.audio = dict(
        encoder="spectrogram", input="waveform", sample_rate=16000, n_fft=400, hop_length=160,
        num_mels=128, fmin=0.0, fmax=8000.0, patch_frames=4, patch_mels=16,
    )
    config.train.compute_dtype = "bfloat16"
    return config

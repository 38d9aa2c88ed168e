"""Tri-modal (text + vision + audio) IMRO on the synthetic `imro_synth` benchmark.

Sections are owned by layers: `data` (imro_jax.data), `model` and `loss` (imro_jax.models),
`optimizer`, `train`, `mesh`, `checkpoint` (imro_jax.train). Every key is used by code or a test.
Override any key on the command line: `imro train --config experiments/configs/trimodal.py
--config.optimizer.learning_rate=1e-3`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # ---- data (imro_jax.data) ----
    config.data = ml_collections.ConfigDict()
    config.data.name = "imro_synth"
    config.data.data_dir = ""  # empty: a default under the workdir
    config.data.batch_size = 32  # global batch, split over processes
    config.data.num_classes = 4

    # ---- model (imro_jax.models) ----
    config.model = ml_collections.ConfigDict()
    config.model.fusion = "imro"  # imro | uniform | concat | late | energy | evidential
    config.model.num_classes = 4
    config.model.dim = 64
    config.model.num_heads = 4
    config.model.mlp_dim = 128
    config.model.depth = 2
    config.model.dropout = 0.0
    config.model.modalities = ml_collections.ConfigDict()
    config.model.modalities.text = dict(encoder="text", vocab_size=256, max_len=32)
    config.model.modalities.vision = dict(encoder="vit", image_size=32, patch_size=8, channels=3)
    config.model.modalities.audio = dict(encoder="spectrogram", sample_rate=8000, num_mels=32)

    # ---- loss (imro_jax.models.imro_loss) ----
    config.loss = ml_collections.ConfigDict()
    config.loss.lambda1 = 0.01
    config.loss.lambda2 = 0.1

    # ---- optimizer / train / mesh / checkpoint (imro_jax.train) ----
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3
    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 200
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.model = 1
    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 100
    return config

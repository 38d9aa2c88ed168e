"""Six-view IMRO on UCI Handwritten (Multiple Features): fou, fac, kar, pix, zer, mor.

Sections are owned by layers: `data` (imro_jax.data), `model` and `loss` (imro_jax.models),
`optimizer`, `train`, `mesh`, `checkpoint` (imro_jax.train). Every key is used by code or a test.
"""

import ml_collections

VIEW_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # ---- data (imro_jax.data) ----
    config.data = ml_collections.ConfigDict()
    config.data.name = "handwritten"
    config.data.data_dir = ""
    config.data.batch_size = 64
    config.data.num_classes = 10

    # ---- model (imro_jax.models) ----
    config.model = ml_collections.ConfigDict()
    config.model.fusion = "imro"
    config.model.num_classes = 10
    config.model.dim = 64
    config.model.num_heads = 4
    config.model.mlp_dim = 128
    config.model.depth = 1
    config.model.dropout = 0.1
    config.model.modalities = ml_collections.ConfigDict()
    for name, dim in VIEW_DIMS.items():
        config.model.modalities[name] = dict(encoder="feature", input_dim=dim)

    # ---- loss (imro_jax.models.imro_loss) ----
    config.loss = ml_collections.ConfigDict()
    config.loss.lambda1 = 0.01
    config.loss.lambda2 = 0.1

    # ---- optimizer / train / mesh / checkpoint (imro_jax.train) ----
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3
    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 500
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.model = 1
    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 250
    return config

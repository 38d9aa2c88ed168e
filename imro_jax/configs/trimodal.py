"""Tri-modal (text + vision + audio) IMRO on the synthetic `imro_synth` benchmark.

Sections are owned by layers: `data` (imro_jax.data), `model` and `loss` (imro_jax.models),
`optimizer`, `train`, `mesh`, `checkpoint` (imro_jax.train). Every key is used by code or a test.
Train it by name (`imro train --config trimodal --workdir runs/tri`) or by path; override any key
on the command line: `--config.optimizer.learning_rate=1e-3`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # ---- data (imro_jax.data) ----
    config.data = ml_collections.ConfigDict()
    config.data.name = "imro_synth"
    # small: 2000/500/500 examples (smoke runs); default: 100k/10k/10k. Both: 4 classes, text 32
    # tokens (vocab 256, 0 = pad, 1 = blank), vision 32x32x3 in [0, 1], audio 8000 samples at 8 kHz.
    config.data.builder_config = "default"
    config.data.data_dir = ""  # empty: TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    config.data.batch_size = 32  # global batch, split over processes
    config.data.num_classes = 4  # checked against the builder config
    # what the trainer (and the statistics pass) reads as "train": a split or a TFDS slice, e.g.
    # "train[:80%]" to hold out "train[80%:]" for model selection
    config.data.train_split = "train"
    config.data.worker_count = 0  # grain worker processes (0: read in the training process)
    config.data.read_threads = 4  # grain ReadOptions.num_threads
    config.data.prefetch_buffer_size = 64  # grain ReadOptions.prefetch_buffer_size

    # ---- model (imro_jax.models) ----
    config.model = ml_collections.ConfigDict()
    config.model.task = "classification"  # classification | regression | generation
    config.model.fusion = "imro"  # imro | uniform | concat | late | energy | evidential
    config.model.num_classes = 4
    config.model.dim = 64
    config.model.num_heads = 4
    config.model.mlp_dim = 128
    config.model.depth = 2
    config.model.dropout = 0.0
    config.model.fusion_tokens = 4  # learned query tokens of the fusion attention
    config.model.nonfinite = "error"  # NaN/Inf in a modality: error | as_missing
    config.model.remat = False  # recompute Transformer blocks in backward (less memory, ~+1 fwd)
    # implementation options: the same function, other kernels or layouts (experiments/bench/options.py,
    # imro_jax.models.spec.ModelSpec): attention_impl "xla" | "cudnn" (GPU); head_major_qkv: one fused
    # QKV product in head-major layout; absorbed_fusion_kv: W_K, W_V absorbed into the fusion queries
    config.model.attention_impl = "xla"
    config.model.head_major_qkv = False
    config.model.absorbed_fusion_kv = False
    # train-time chance of hiding a modality from the fusion (every fusion; chosen on validation:
    # experiments/results/select_reliability)
    config.model.modality_dropout = 0.3
    # R = I / (H + eps) (imro_jax.models.reliability). H: surprisal (the encoding's excess
    # surprisal under clean-data statistics, fitted after training) | predictive (the paper taken
    # literally, "imro_paper") | gaussian | embedding; plus agreement x KL(consensus || q_m).
    # The prediction: (1 - decision) x the R-scaled token fusion's + decision x the R-weighted
    # log-linear vote of the unimodal heads (imro_jax.models.model.reliability_vote).
    config.model.reliability = ml_collections.ConfigDict(dict(
        entropy="surprisal", eps=1e-6, normalize=True, agreement=1.0,
        shrinkage=0.1, rank=0, quantile=0.99, fit_examples=4096,  # the density and its calibration
        # imro: weight of the R-weighted vote of the unimodal heads in the prediction (1: the vote
        # alone; chosen on validation with agreement and modality dropout)
        decision=1.0,
        # the vote's weights R^p / sum R^p (1: R itself); 0.5 chosen on validation
        # (experiments/results/select_vote_power: 98.21 against 98.04 for p = 1, 2 seeds)
        vote_power=0.5,
        # > 0: the vote's weight gated per sample, beta (1 - exp(-max_m H / decision_gate)) (nats)
        decision_gate=0.0,
        # True: the token fusion reads stop-gradient encoder tokens (its head, trained by
        # loss.joint_weight, then leaves the encoders and the vote unchanged)
        joint_detached=False,
    ))
    config.model.modalities = ml_collections.ConfigDict()
    config.model.modalities.text = dict(encoder="text", vocab_size=256, max_len=32)
    config.model.modalities.vision = dict(encoder="vit", image_size=32, patch_size=8, channels=3)
    # 1 s at 8 kHz -> 61 frames of 32 HTK mels -> 15 x 4 patches of 4 frames x 8 mels
    config.model.modalities.audio = dict(
        encoder="spectrogram", input="waveform", sample_rate=8000, n_fft=256, hop_length=128,
        num_mels=32, fmin=0.0, fmax=4000.0, patch_frames=4, patch_mels=8,
    )

    # ---- loss (imro_jax.models.imro_loss) ----
    config.loss = ml_collections.ConfigDict()
    config.loss.lambda1 = 0.01  # weight of sum_m H(X_m)
    config.loss.lambda2 = 0.1  # weight of -sum_m I(X_m; Y)
    config.loss.mi_bound = "barber_agakov"  # training-time I: barber_agakov | infonce
    config.loss.unimodal_weight = 1.0  # auxiliary unimodal NLL
    # the token fusion head's own task loss beside the vote's (imro with model.reliability.decision > 0)
    config.loss.joint_weight = 0.0
    config.loss.evidential_annealing_steps = 100  # TMC KL annealing (fusion="evidential" only)
    config.loss.kl_weight = 0.01  # Gaussian-embedding KL (reliability.entropy="gaussian" only)

    # ---- optimizer / train / mesh / checkpoint (imro_jax.train) ----
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3  # peak of warmup + cosine
    config.optimizer.warmup_steps = 20  # linear warmup from 0 (optimizer updates)
    config.optimizer.end_learning_rate_ratio = 0.1  # cosine decays to learning_rate * this
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 1e-4  # AdamW, masked off norms and biases
    config.optimizer.grad_clip_norm = 1.0  # global-norm clipping
    config.optimizer.accumulation_steps = 1  # >1: optax.MultiSteps over micro-batches
    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 200  # train steps (micro-steps with accumulation)
    config.train.log_every = 10  # metrics.jsonl + progress every N steps
    config.train.eval_every = 100  # evaluate eval_split every N steps (0: never)
    config.train.eval_split = "validation"
    config.train.compute_dtype = "float32"  # float32 | bfloat16 (params/opt state stay f32)
    config.train.prefetch = 2  # batches read ahead on a background thread (grain)
    # Besides metrics.jsonl: "tensorboard" (workdir/tensorboard, no TensorFlow), "wandb" (if
    # installed; project from $WANDB_PROJECT). E.g. --config.train.writers="('tensorboard','wandb')"
    config.train.writers = ("tensorboard",)
    # (first, last): jax.profiler trace of those steps into workdir/profile; (): none. E.g. (5, 7).
    config.train.profile_steps = ()
    config.train.max_skipped_fraction = 0.5  # stop a run that skips more than this share of steps
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
    config.checkpoint.every_steps = 100  # also at the end and at every eval
    config.checkpoint.keep_last = 2
    config.checkpoint.best_metric = "eval/accuracy"  # also keep the best by this ("": none)
    config.checkpoint.best_mode = "max"
    return config

"""imro-jax: information-theoretic modality reliability optimisation for multimodal transformers.

Subpackages (the layout shows the architecture, data flows one way):
  imro_jax.info    pure-functional entropy estimators, MI lower bounds, reliability scores.
  imro_jax.data    TFDS builders (array_record, no TensorFlow), grain pipelines, corruptions.
  imro_jax.models  Flax Linen encoders, reliability estimator, reliability-aware fusion, heads.
  imro_jax.train   mesh/sharding, jitted train step, Optax, Orbax checkpoints, CLI.
  imro_jax.eval    metrics and robustness sweeps.
  imro_jax.perf    the production train step made ready to time; timings, FLOPs, compile counts.
"""

__version__ = "0.1.0"

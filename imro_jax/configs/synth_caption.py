"""Caption generation on `imro_synth`: the tri-modal config with `model.task = "generation"`.

Everything not listed here is `imro_jax/configs/trimodal.py`. The decoder writes the synthetic
caption `<bos> a <size> <colour> <class> with <rhythm> sound <eos>` (ids < 32, 12 positions).
`imro train --config synth_caption --workdir runs/caption`
"""

import ml_collections

from imro_jax.configs import trimodal


def get_config() -> ml_collections.ConfigDict:
    config = trimodal.get_config()
    config.model.task = "generation"
    del config.model["num_classes"]  # classification-only key
    config.model.decoder = ml_collections.ConfigDict(dict(vocab_size=32, max_len=12, depth=1))
    config.model.reliability.decision = 0.0  # captions come from the fused tokens: no unimodal vote
    # Evaluation summary: teacher-forced token accuracy / NLL / perplexity (imro_jax.train.model_task).
    config.checkpoint.best_metric = "eval/token_accuracy"
    return config

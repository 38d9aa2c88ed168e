"""Caption generation on `imro_synth`: the tri-modal config with `model.task = "generation"`.

Everything not listed here is `experiments/configs/trimodal.py`. The decoder writes the synthetic
caption `<bos> a <size> <colour> <class> with <rhythm> sound <eos>` (ids < 32, 12 positions).
`imro train --config experiments/configs/synth_caption.py --workdir runs/caption`
"""

import pathlib

import ml_collections

from imro_jax.train.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(pathlib.Path(__file__).with_name("trimodal.py"))
    config.model.task = "generation"
    del config.model["num_classes"]  # classification-only key
    config.model.decoder = ml_collections.ConfigDict(dict(vocab_size=32, max_len=12, depth=1))
    # Evaluation summary: teacher-forced token accuracy / NLL / perplexity (imro_jax.train.model_task).
    config.checkpoint.best_metric = "eval/token_accuracy"
    return config

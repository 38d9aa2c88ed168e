"""Caption generation on `imro_synth`: the tri-modal config with `model.task = "generation"`.

Everything not listed here is `experiments/configs/trimodal.py`. The decoder writes the synthetic
caption `<bos> a <size> <colour> <class> with <rhythm> sound <eos>` (ids < 32, 12 positions).
`imro train --config experiments/configs/synth_caption.py --workdir runs/caption`
"""

import importlib.util
import pathlib

import ml_collections


def _trimodal_config() -> ml_collections.ConfigDict:
    path = pathlib.Path(__file__).with_name("trimodal.py")
    spec = importlib.util.spec_from_file_location("imro_config_trimodal", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config() -> ml_collections.ConfigDict:
    config = _trimodal_config()
    config.model.task = "generation"
    del config.model["num_classes"]  # classification-only key
    config.model.decoder = ml_collections.ConfigDict(dict(vocab_size=32, max_len=12, depth=1))
    # The loop's split summary (imro_jax.train.model_task) covers classification/regression only.
    config.train.eval_every = 0
    config.checkpoint.best_metric = ""
    return config

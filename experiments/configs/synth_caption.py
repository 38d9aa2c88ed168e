"""`imro_jax/configs/synth_caption.py`, shipped with the package (`imro train --config synth_caption`); this path keeps working."""

from imro_jax.configs.synth_caption import get_config  # noqa: F401

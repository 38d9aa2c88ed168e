"""`imro_jax/configs/handwritten.py`, shipped with the package (`imro train --config handwritten`); this path keeps working."""

from imro_jax.configs.handwritten import get_config  # noqa: F401

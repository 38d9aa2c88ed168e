"""`imro_jax/configs/trimodal.py`, shipped with the package (`imro train --config trimodal`); this path keeps working."""

from imro_jax.configs.trimodal import get_config  # noqa: F401

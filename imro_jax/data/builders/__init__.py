"""TFDS builders (array_record, buildable and readable without TensorFlow).

Importing this package registers ``imro_synth``, ``handwritten``, ``cmu_mosi`` and ``cmu_mosei``
with TFDS, so ``tfds.builder(name)`` / ``tfds.data_source(name)`` find them.
"""

from imro_jax.data.builders.cmu_affect import CmuMosei, CmuMosi
from imro_jax.data.builders.handwritten import Handwritten, HandwrittenConfig
from imro_jax.data.builders.imro_synth import ImroSynth, ImroSynthConfig

__all__ = ["CmuMosei", "CmuMosi", "Handwritten", "HandwrittenConfig", "ImroSynth", "ImroSynthConfig"]

"""The batch contract shared by the data pipeline, the model, the loss and the train step.

A batch is a flat-ish dict of arrays with a leading batch axis ``B``:

    {
      "<modality name>": array,            # e.g. "text": int32[B, T], "vision": float32[B, H, W, C],
                                           # "audio": float32[B, S], "fou": float32[B, 76]
      "mask":    {"<modality>": bool[B]},  # True where the modality is present for that sample
      "label":   int32[B] (classification) | float32[B] (regression),
      "quality": {"<modality>": float32[B]} (optional: ground-truth reliability q_m in [0, 1]),
      "caption": int32[B, L] (optional: target tokens for the generation head, 0 = padding),
      "evidence": {"<modality>": int32[B]} (optional: the class each modality's signal supports;
                                            != label marks a conflicting modality),
      "corruption": {...} (optional: record of applied corruptions, see imro_jax.data.corruptions),
    }

Data flows one way: builder -> pipeline -> batch -> model -> loss -> step; nothing here imports
from those layers.
"""

MASK = "mask"
LABEL = "label"
QUALITY = "quality"
CAPTION = "caption"
CORRUPTION = "corruption"
EVIDENCE = "evidence"

RESERVED_KEYS = frozenset({MASK, LABEL, QUALITY, CAPTION, CORRUPTION, EVIDENCE})


def modality_names(batch) -> list[str]:
    """Returns the modality keys of ``batch`` in sorted order (everything not reserved)."""
    return sorted(k for k in batch if k not in RESERVED_KEYS)

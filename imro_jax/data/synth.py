"""Generator of the synthetic tri-modal benchmark ``imro_synth`` (pure numpy, seeded).

Every sample has a class ``y`` in ``[0, K)`` and three modalities. Modality ``m`` carries evidence
for an *evidence class* ``c_m`` (``c_m = y`` except for a conflicting modality) at a quality
``q_m`` in ``[0, 1]``, the fraction of the content that comes from the class-conditional generator;
the rest is class-independent nuisance:

    x_m = q_m * signal_m(c_m, attributes) + (1 - q_m) * nuisance_m

  * ``text``: int32 ``[T]`` token ids, ``0`` = padding, variable length ``L ~ U{T/4, ..., T}``.
    Each token is a keyword of class ``c`` (``KEYWORDS_PER_CLASS`` words per class) with probability
    ``keyword_rate * q``, else uniform over the whole content vocabulary (which also holds every
    class's keywords, so nuisance tokens are distractors).
  * ``vision``: uint8 ``[H, W, C]``. Signal: a sinusoidal grating whose orientation encodes the
    class (``pi * c / K`` plus jitter), with random phase, a spatial frequency set by the ``size``
    attribute and a tint set by the ``colour`` attribute. Nuisance: two gratings of random
    orientation, frequency and tint plus white noise.
  * ``audio``: int16 ``[S]`` PCM. Signal: a tone whose frequency encodes the class (log-spaced over
    ``[300, 2400]`` Hz, +-3% jitter, a weak second harmonic), steady or amplitude-modulated at 4 Hz
    by the ``rhythm`` attribute. Nuisance: two tones at the frequencies of random classes (the
    audio analogue of distractor keywords) plus white noise.

At ``q = 0`` a modality holds no information about the class; at low ``q`` class evidence is
weak and ambiguous (nuisance gratings/tones/keywords look like other classes' signals), so no
single modality is trivially separable. A fraction ``p_noise`` of modalities is pure noise
(``q = 0``); a fraction ``p_conflict`` of samples has one modality carrying evidence of another
class (``c_m != y``) at ``q ~ U[0.5, 1]``. ``q`` and ``c`` are stored as ground truth.

The caption (``[caption_length]`` int32, 0 = padding) is a fixed template of the class and the
per-sample attributes: ``<bos> a <size> <colour> <class> with <rhythm> sound <eos>``, so it is
learnable from the inputs when they are reliable.

Regression variant (``score_noise_std`` given): a continuous target built from the class and two
attributes, with Gaussian noise of a known std (:func:`regression_target`):

    s = (y - (K - 1) / 2) + 0.25 (2 size - 1) + 0.25 (2 rhythm - 1) + score_noise_std * N(0, 1)

The class is in every modality, ``size`` only in vision and ``rhythm`` only in audio, so the
modalities complement each other; ``score_noise_std`` is the irreducible error (Bayes MSE
``score_noise_std^2``, Bayes MAE ``score_noise_std * sqrt(2 / pi)``). The noise is drawn after
everything else, so the other arrays equal those of the classification data.

Determinism: a split is a pure function of ``(spec, seed, split, chunk_size)``: the balanced
labels come from ``np.random.default_rng([seed, split_id])`` and chunk ``i`` from
``np.random.default_rng([seed, split_id, i + 1])``, so any chunk can be regenerated alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

MODALITIES = ("audio", "text", "vision")  # sorted, as imro_jax.batch.modality_names returns them

PAD_ID, BLANK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("coarse", "fine")
RHYTHMS = ("steady", "pulsing")
MAX_CLASSES = 16
CAPTION_WORDS = (
    ("a", "with", "sound")
    + COLOURS
    + SIZES
    + RHYTHMS
    + tuple(f"class_{k}" for k in range(MAX_CLASSES))
)
CAPTION_WORD_ID = {w: 4 + i for i, w in enumerate(CAPTION_WORDS)}  # ids 4 .. 30
CONTENT_START = 32  # first id of the text content vocabulary
KEYWORDS_PER_CLASS = 8

_COLOUR_RGB = np.array(
    [[1.0, 0.15, 0.15], [0.15, 1.0, 0.15], [0.2, 0.3, 1.0], [1.0, 1.0, 0.1]], np.float32
)
_SIZE_FREQ = np.array([2.5, 5.0], np.float32)  # grating cycles per image
_AUDIO_F_LOW, _AUDIO_F_HIGH = 300.0, 2400.0
_AUDIO_SCALE = 0.2  # RMS-1 mixture -> int16 full scale, leaves headroom before clipping
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class SynthSpec:
    """Sizes and the quality/conflict distribution of ``imro_synth``.

    Attributes:
      num_classes: K, at most ``MAX_CLASSES``.
      text_length: T, padded token length.
      vocab_size: text vocabulary size (ids ``< vocab_size``); caption tokens share it.
      image_size: H = W.
      channels: C (3: the colour attribute tints RGB).
      audio_samples: S waveform samples.
      sample_rate: Hz.
      caption_length: padded caption length (the template uses 9 tokens).
      quality_alpha: ``q ~ Beta(quality_alpha, quality_beta)`` before noise/conflict overrides.
      quality_beta: see ``quality_alpha``.
      p_noise: probability that a modality of a sample is pure noise (``q = 0``).
      p_conflict: probability that a sample has one conflicting modality.
      keyword_rate: probability that a token is a class keyword at ``q = 1``.
    """

    num_classes: int = 4
    text_length: int = 32
    vocab_size: int = 256
    image_size: int = 32
    channels: int = 3
    audio_samples: int = 8000
    sample_rate: int = 8000
    caption_length: int = 12
    quality_alpha: float = 2.0
    quality_beta: float = 2.0
    p_noise: float = 0.1
    p_conflict: float = 0.1
    keyword_rate: float = 0.3

    def __post_init__(self):
        if not 2 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [2, {MAX_CLASSES}], got {self.num_classes}")
        needed = CONTENT_START + self.num_classes * KEYWORDS_PER_CLASS
        if self.vocab_size < needed + 16:
            raise ValueError(
                f"vocab_size {self.vocab_size} too small: {self.num_classes} classes need "
                f">= {needed + 16} ids (specials, caption words, keywords, filler)"
            )
        if self.channels != 3:
            raise ValueError(f"channels must be 3 (RGB tint attribute), got {self.channels}")
        if self.caption_length < 9:
            raise ValueError(f"caption_length must be >= 9, got {self.caption_length}")
        if self.text_length < 4:
            raise ValueError(f"text_length must be >= 4, got {self.text_length}")
        for name in ("p_noise", "p_conflict", "keyword_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def class_frequencies(self) -> np.ndarray:
        """Tone frequency of each class in Hz, ``float32[K]``, log-spaced over [300, 2400]."""
        return (
            _AUDIO_F_LOW
            * (_AUDIO_F_HIGH / _AUDIO_F_LOW) ** (np.arange(self.num_classes) / (self.num_classes - 1))
        ).astype(np.float32)


def balanced_labels(num_examples: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class labels with counts differing by at most one, in random order. Returns int32[n]."""
    return rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)


def draw_ground_truth(spec: SynthSpec, labels: np.ndarray, rng: np.random.Generator) -> dict:
    """Per-sample quality, evidence class and attributes.

    Args:
      spec: the benchmark spec.
      labels: int32[n] classes.
      rng: numpy Generator (consumed).

    Returns:
      dict with ``quality`` float32[n, 3] and ``evidence`` int32[n, 3] (columns in ``MODALITIES``
      order), ``colour``/``size``/``rhythm`` int32[n].
    """
    n, m = labels.shape[0], len(MODALITIES)
    quality = rng.beta(spec.quality_alpha, spec.quality_beta, (n, m))
    quality[rng.random((n, m)) < spec.p_noise] = 0.0
    conflict = rng.random(n) < spec.p_conflict
    conflict_modality = rng.integers(0, m, n)
    shift = rng.integers(1, spec.num_classes, n)
    conflict_quality = rng.uniform(0.5, 1.0, n)
    evidence = np.repeat(labels[:, None], m, axis=1)
    rows = np.nonzero(conflict)[0]
    evidence[rows, conflict_modality[rows]] = (labels[rows] + shift[rows]) % spec.num_classes
    quality[rows, conflict_modality[rows]] = conflict_quality[rows]
    return {
        "quality": quality.astype(np.float32),
        "evidence": evidence.astype(np.int32),
        "colour": rng.integers(0, len(COLOURS), n).astype(np.int32),
        "size": rng.integers(0, len(SIZES), n).astype(np.int32),
        "rhythm": rng.integers(0, len(RHYTHMS), n).astype(np.int32),
    }


def make_text(spec: SynthSpec, evidence: np.ndarray, quality: np.ndarray, rng) -> np.ndarray:
    """Token sequences. Args: evidence int32[n], quality float32[n]. Returns int32[n, T]."""
    n, t = evidence.shape[0], spec.text_length
    lengths = rng.integers(t // 4, t + 1, n)
    filler = rng.integers(CONTENT_START, spec.vocab_size, (n, t))
    keyword = CONTENT_START + evidence[:, None] * KEYWORDS_PER_CLASS + rng.integers(
        0, KEYWORDS_PER_CLASS, (n, t)
    )
    is_keyword = rng.random((n, t)) < spec.keyword_rate * quality[:, None]
    tokens = np.where(is_keyword, keyword, filler)
    tokens[np.arange(t)[None, :] >= lengths[:, None]] = PAD_ID
    return tokens.astype(np.int32)


def _gratings(size: int, theta, freq, phase) -> np.ndarray:
    """cos(2 pi f (x cos theta + y sin theta) + phase) on a [0, 1)^2 grid. Args [n]. Returns [n, H, W]."""
    coords = np.arange(size, dtype=np.float32) / size
    y, x = coords[None, :, None], coords[None, None, :]
    f32 = lambda a: np.asarray(a, np.float32)[:, None, None]  # noqa: E731
    proj = x * np.cos(f32(theta)) + y * np.sin(f32(theta))
    return np.cos(np.float32(2 * np.pi) * f32(freq) * proj + f32(phase))


def make_vision(spec: SynthSpec, evidence, quality, colour, size, rng) -> np.ndarray:
    """Images. Args: evidence, colour, size int32[n]; quality float32[n]. Returns uint8[n, H, W, 3]."""
    n, k, h = evidence.shape[0], spec.num_classes, spec.image_size
    theta = np.pi * evidence / k + rng.uniform(-np.pi / (6 * k), np.pi / (6 * k), n)
    freq = _SIZE_FREQ[size] * rng.uniform(0.9, 1.1, n)
    grating = _gratings(h, theta, freq, rng.uniform(0, 2 * np.pi, n))
    signal = np.float32(0.45) * grating[..., None] * _COLOUR_RGB[colour][:, None, None, :]
    nuisance = np.zeros((n, h, h, 3), np.float32)
    for _ in range(2):
        g = _gratings(h, rng.uniform(0, np.pi, n), rng.uniform(2.0, 6.0, n), rng.uniform(0, 2 * np.pi, n))
        tint = rng.uniform(0.2, 1.0, (n, 1, 1, 3)).astype(np.float32)
        nuisance += np.float32(0.45 / np.sqrt(2)) * g[..., None] * tint
    nuisance += 0.1 * rng.standard_normal((n, h, h, 3), dtype=np.float32)
    q = quality[:, None, None, None].astype(np.float32)
    image = 0.5 + q * signal + (1 - q) * nuisance
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-12)


def _sines(freq: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """sin(2 pi f t + random phase) in float32. Args: freq [n, 1] Hz, t [1, S] s. Returns [n, S]."""
    phase = rng.uniform(0, 2 * np.pi, freq.shape).astype(np.float32)
    return np.sin(np.float32(2 * np.pi) * freq.astype(np.float32) * t + phase)


def make_audio(spec: SynthSpec, evidence, quality, rhythm, rng) -> np.ndarray:
    """Waveforms. Args: evidence, rhythm int32[n]; quality float32[n]. Returns int16[n, S].

    Nuisance tones sit at the frequencies of random classes (like the text distractor keywords),
    so a weak signal tone competes with equally class-like distractors.
    """
    n = evidence.shape[0]
    t = (np.arange(spec.audio_samples, dtype=np.float32) / spec.sample_rate)[None, :]
    class_freq = spec.class_frequencies()
    nyquist = spec.sample_rate / 2
    f0 = class_freq[evidence][:, None] * rng.uniform(0.97, 1.03, (n, 1))
    harmonic = np.where(2 * f0 < 0.95 * nyquist, 0.3, 0.0).astype(np.float32)
    envelopes = np.stack([np.ones_like(t[0]), 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t[0]))])
    tone = _sines(f0, t, rng) + harmonic * _sines(2 * f0, t, rng)
    signal = _unit_rms(tone * envelopes[rhythm])
    distractor = class_freq[rng.integers(0, spec.num_classes, (n, 2))] * rng.uniform(0.97, 1.03, (n, 2))
    nuisance = _sines(distractor[:, :1], t, rng) + _sines(distractor[:, 1:], t, rng)
    nuisance = _unit_rms(nuisance + 0.7 * rng.standard_normal(nuisance.shape, dtype=np.float32))
    q = quality[:, None].astype(np.float32)
    wave = _AUDIO_SCALE * (q * signal + (1 - q) * nuisance)
    return np.round(np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)


def make_caption(spec: SynthSpec, labels, colour, size, rhythm) -> np.ndarray:
    """Caption tokens ``<bos> a <size> <colour> <class> with <rhythm> sound <eos>``. Returns int32[n, L]."""
    w = CAPTION_WORD_ID
    n = labels.shape[0]
    caption = np.zeros((n, spec.caption_length), np.int32)
    caption[:, 0] = BOS_ID
    caption[:, 1] = w["a"]
    caption[:, 2] = np.array([w[s] for s in SIZES])[size]
    caption[:, 3] = np.array([w[c] for c in COLOURS])[colour]
    caption[:, 4] = w["class_0"] + labels
    caption[:, 5] = w["with"]
    caption[:, 6] = np.array([w[r] for r in RHYTHMS])[rhythm]
    caption[:, 7] = w["sound"]
    caption[:, 8] = EOS_ID
    return caption


SCORE_ATTRIBUTE_STEP = 0.25  # score change of each binary attribute (size, rhythm) from its mean


def regression_target(spec: SynthSpec, labels, size, rhythm, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    r"""The regression target of the class and attributes, plus Gaussian noise of std ``noise_std``.

    .. math:: s = \big(y - \tfrac{K-1}{2}\big) + a\,(2\,\mathrm{size} - 1) + a\,(2\,\mathrm{rhythm} - 1)
              + \sigma \varepsilon, \quad a = 0.25,\ \varepsilon \sim N(0, 1)

    Args:
      spec: the benchmark spec (K).
      labels, size, rhythm: int32[n] class and attributes.
      noise_std: sigma >= 0, the irreducible noise.
      rng: numpy Generator (n normal draws).

    Returns:
      float32[n] scores (for K = 4 within [-2, 2] before the noise).
    """
    if noise_std < 0:
        raise ValueError(f"score noise std must be >= 0, got {noise_std}")
    labels = np.asarray(labels, np.float64)
    centred = labels - (spec.num_classes - 1) / 2
    attributes = SCORE_ATTRIBUTE_STEP * ((2 * np.asarray(size) - 1) + (2 * np.asarray(rhythm) - 1))
    return (centred + attributes + noise_std * rng.standard_normal(labels.shape)).astype(np.float32)


def score_variance(spec: SynthSpec, noise_std: float) -> float:
    """Var(s) of :func:`regression_target` over a split: ``(K^2 - 1) / 12`` (balanced classes) plus
    ``2 * 0.25^2`` (two fair binary attributes) plus ``noise_std^2``, all independent."""
    return (spec.num_classes**2 - 1) / 12 + 2 * SCORE_ATTRIBUTE_STEP**2 + noise_std**2


def generate(spec: SynthSpec, labels: np.ndarray, rng: np.random.Generator, *,
             score_noise_std: float | None = None) -> dict[str, np.ndarray]:
    """Generates one chunk of samples for the given labels.

    Args:
      spec: the benchmark spec.
      labels: int32[n] classes.
      rng: numpy Generator (consumed in a fixed order).
      score_noise_std: if given, also the regression target ``score`` with this noise std
        (:func:`regression_target`, drawn last: the other arrays do not change).

    Returns:
      dict of arrays with leading axis n: ``text`` int32[n, T], ``vision`` uint8[n, H, W, 3],
      ``audio`` int16[n, S], ``label`` int32[n], ``caption`` int32[n, L], ``quality`` float32[n, 3],
      ``evidence`` int32[n, 3] (columns in ``MODALITIES`` order), ``colour``/``size``/``rhythm`` int32[n],
      and ``score`` float32[n] with ``score_noise_std``.
    """
    labels = np.asarray(labels, np.int32)
    truth = draw_ground_truth(spec, labels, rng)
    col = {m: i for i, m in enumerate(MODALITIES)}
    ev, q = truth["evidence"], truth["quality"]
    chunk = {
        "text": make_text(spec, ev[:, col["text"]], q[:, col["text"]], rng),
        "vision": make_vision(spec, ev[:, col["vision"]], q[:, col["vision"]], truth["colour"], truth["size"], rng),
        "audio": make_audio(spec, ev[:, col["audio"]], q[:, col["audio"]], truth["rhythm"], rng),
        "label": labels,
        "caption": make_caption(spec, labels, truth["colour"], truth["size"], truth["rhythm"]),
        **truth,
    }
    if score_noise_std is not None:
        chunk["score"] = regression_target(spec, labels, truth["size"], truth["rhythm"], score_noise_std, rng)
    return chunk


def generate_split(
    spec: SynthSpec, *, num_examples: int, seed: int, split: str, chunk_size: int = 1024,
    score_noise_std: float | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields the chunks of a split, in order (see the module docstring for determinism).

    Args:
      spec: the benchmark spec.
      num_examples: split size; labels are balanced over the whole split.
      seed: dataset seed.
      split: one of ``SPLIT_IDS`` (train, validation, test).
      chunk_size: examples per chunk; the content depends on it (builders fix it).
      score_noise_std: regression variant: also the ``score`` (see :func:`generate`).

    Yields:
      ``generate`` dicts of at most ``chunk_size`` examples.
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_IDS)}")
    split_id = SPLIT_IDS[split]
    labels = balanced_labels(num_examples, spec.num_classes, np.random.default_rng([seed, split_id]))
    for chunk, start in enumerate(range(0, num_examples, chunk_size)):
        rng = np.random.default_rng([seed, split_id, chunk + 1])
        yield generate(spec, labels[start : start + chunk_size], rng, score_noise_std=score_noise_std)


def quality_matrix(batch: dict) -> np.ndarray:
    """The ground-truth quality of a batch as ``float32[B, M]``, columns in ``MODALITIES`` order
    (the model's sorted modality order), from its ``quality`` feature (modality -> ``[B]``)."""
    if "quality" not in batch:
        raise KeyError("the batch has no 'quality' feature (only imro_synth splits carry the ground-truth quality)")
    return np.stack([np.asarray(batch["quality"][m], np.float32) for m in MODALITIES], axis=1)

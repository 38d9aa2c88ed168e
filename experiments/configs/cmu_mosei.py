"""CMU-MOSEI sentiment regression on MulT's word-aligned features (`mosei_senti_data.pkl`).

`experiments/configs/trimodal.py` (where every key is documented) with this dataset's data and
modalities: text (GloVe 300), vision (Facet 35) and audio (COVAREP 74), each a [50, d] sequence
through the sequence form of the `feature` encoder, whose all-zero steps (MulT's front padding)
are masked. The target is the sentiment score in [-3, 3], trained with the L1 loss as MulT does;
the eval summary reports MAE, Corr, Acc-2/F1 (has-0 and non-0), Acc-7 and Acc-5
(`imro_jax.eval.affect`; protocol in `docs/protocols.md`, section 6 ("Affect")).

  imro train --config experiments/configs/cmu_mosei.py --workdir runs/mosei \\
      --config.data.manual_dir=DIR_WITH_THE_PICKLE

The 7-class variant (cross-entropy on round(clip(score, -3, 3)), which the classification-only
fusions `energy` and `evidential` need) is `experiments/configs/cmu_mosei_class7.py`.
"""

import pathlib

import ml_collections

from imro_jax.data.builders.cmu_affect import CmuMosei
from imro_jax.train.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(pathlib.Path(__file__).with_name("trimodal.py"))

    # ---- data (imro_jax.data): the aligned pickle from data.manual_dir ----
    config.data.name = "cmu_mosei"
    config.data.builder_config = "aligned"
    config.data.manual_dir = ""  # the folder holding the pickle ("": <data_dir>/downloads/manual)
    config.data.label = "score"  # score (regression) | class2 | class7
    config.data.num_classes = 1  # 1 for the score

    # ---- model (imro_jax.models): regression head, one feature-sequence encoder per modality ----
    config.model.task = "regression"
    del config.model["num_classes"]  # classification-only key
    # Var(Y) of the training scores, for H(Y) = 0.5 log(2 pi e Var(Y)) in the MI term. 1.0 is a
    # placeholder: experiments/affect.py sets it from the training split; with `imro train` pass
    # --config.model.label_variance=<variance of your training labels>.
    config.model.label_variance = 1.0
    config.model.dropout = 0.1
    config.model.modalities = {m: dict(encoder="feature", input_dim=d) for m, d in CmuMosei.DIMS.items()}

    # ---- loss / optimizer / train / checkpoint: trimodal.py's, except ----
    # imro predicts with its R-scaled token fusion, without the unimodal heads' vote, as for the
    # regression task of imro_synth, where this was chosen on validation
    # (experiments/results/select_reliability_synth_regression): averaging unimodal means cannot add up
    # what only one modality carries, as a product of class likelihoods does. Not chosen on CMU data:
    # none is available here.
    config.model.reliability.decision = 0.0
    config.loss.regression_loss = "l1"  # MulT's L1Loss on the score
    config.optimizer.warmup_steps = 100
    config.train.num_steps = 5000  # about 10 epochs of MOSEI at batch 32 (MulT: 40 epochs at 24)
    config.train.log_every = 50
    config.train.eval_every = 1000
    config.train.eval_split = "validation"
    config.checkpoint.every_steps = 1000
    config.checkpoint.best_metric = "eval/mae"  # MulT keeps the best validation L1
    config.checkpoint.best_mode = "min"
    return config

"""Pure-functional information-theoretic primitives (all in nats).

Entropy estimators, mutual-information lower bounds on critic score matrices, critics, a
one-call neural MI estimator, per-sample surprisal
(Gaussian and kNN densities) with its calibration, and the IMRO reliability score and regulariser.
"""

from imro_jax.info.bounds import (
    barber_agakov_lower_bound,
    dv_lower_bound,
    infonce_lower_bound,
    js_lower_bound,
    mine_lower_bound,
    nwj_lower_bound,
    smile_lower_bound,
    tuba_lower_bound,
)
from imro_jax.info.density import (
    Calibration,
    GaussianDensity,
    GaussianStats,
    excess_surprisal,
    fit_calibration,
    fit_gaussian_density,
    gaussian_log_density,
    gaussian_sufficient_stats,
    gaussian_surprisal,
    knn_surprisal,
    mahalanobis_sq,
    robust_z,
)
from imro_jax.info.critics import BilinearCritic, ConcatCritic, SeparableCritic, make_critic
from imro_jax.info.entropy import categorical_entropy, gaussian_entropy, knn_entropy
from imro_jax.info.estimate import estimate_mi
from imro_jax.info.reliability import imro_regularizer, reliability_scores

__all__ = [
    "Calibration",
    "GaussianDensity",
    "GaussianStats",
    "excess_surprisal",
    "fit_calibration",
    "fit_gaussian_density",
    "gaussian_log_density",
    "gaussian_sufficient_stats",
    "gaussian_surprisal",
    "knn_surprisal",
    "mahalanobis_sq",
    "robust_z",
    "BilinearCritic",
    "ConcatCritic",
    "SeparableCritic",
    "barber_agakov_lower_bound",
    "categorical_entropy",
    "dv_lower_bound",
    "estimate_mi",
    "gaussian_entropy",
    "imro_regularizer",
    "infonce_lower_bound",
    "js_lower_bound",
    "knn_entropy",
    "make_critic",
    "mine_lower_bound",
    "nwj_lower_bound",
    "reliability_scores",
    "smile_lower_bound",
    "tuba_lower_bound",
]

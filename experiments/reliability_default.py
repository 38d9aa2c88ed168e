"""Chooses the reliability estimator default by experiment (models engineer).

Synthetic 2-view task, C=4 classes, 16-d views: view "a" is moderately informative for every
sample (prototype + N(0, 1.5^2)); view "b" is very informative (prototype + N(0, 0.3^2)) but,
for a random half of the samples (train and test), replaced by pure noise N(0, 1).
Measured on 1024 test samples after `steps` Adam steps: accuracy, and the mean R_b on clean vs
corrupted samples (a useful estimator puts R_b high when b is clean and low when corrupted).
"""

import sys
import time

import jax
import ml_collections
import numpy as np
import optax

from imro_jax.models import build_model, imro_loss

C, D, N_TRAIN, N_TEST = 4, 16, 2048, 1024

def make_data(rng, n, protos, noise_scale=1.0):
    y = rng.integers(0, C, n)
    a = protos[0][y] + 1.5 * rng.normal(size=(n, D))
    b = protos[1][y] + 0.3 * rng.normal(size=(n, D))
    corrupt = rng.random(n) < 0.5
    b[corrupt] = noise_scale * rng.normal(size=(corrupt.sum(), D))
    return {"a": a.astype(np.float32), "b": b.astype(np.float32), "label": y.astype(np.int32),
            "mask": {"a": np.ones(n, bool), "b": np.ones(n, bool)}}, corrupt

def run(fusion, entropy, mi_bound, unimodal_weight, seed, steps=300, batch_size=64):
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(2, C, D))
    train, _ = make_data(rng, N_TRAIN, protos)
    test, corrupt = make_data(rng, N_TEST, protos)
    test_ood, _ = make_data(np.random.default_rng(seed + 100), N_TEST, protos, noise_scale=3.0)
    cfg = ml_collections.ConfigDict(dict(
        task="classification", fusion=fusion, num_classes=C, dim=32, num_heads=2, mlp_dim=64,
        depth=1, dropout=0.0, fusion_tokens=1, nonfinite="error",
        reliability=dict(entropy=entropy, eps=1e-6),
        modalities=dict(a=dict(encoder="feature", input_dim=D), b=dict(encoder="feature", input_dim=D))))
    loss_cfg = ml_collections.ConfigDict(dict(lambda1=0.01, lambda2=0.1, mi_bound=mi_bound,
        unimodal_weight=unimodal_weight, evidential_annealing_steps=100, kl_weight=0.01))
    model = build_model(cfg)
    take = lambda data, idx: jax.tree.map(lambda x: x[idx], data)
    params = jax.jit(lambda k, b: model.init({"params": k}, b, train=False))(jax.random.key(seed), take(train, np.arange(batch_size)))
    opt = optax.adam(1e-3)
    state = opt.init(params)
    @jax.jit
    def step(params, state, b, key, t):
        def f(p):
            out = model.apply(p, b, train=True, rngs={"dropout": key})
            return imro_loss(out, b, loss_cfg, step=t)
        (l, m), g = jax.value_and_grad(f, has_aux=True)(params)
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state, l
    key = jax.random.key(seed + 1)
    for t in range(steps):
        idx = rng.integers(0, N_TRAIN, batch_size)
        key, sub = jax.random.split(key)
        params, state, l = step(params, state, take(train, idx), sub, t)
    out = jax.jit(lambda p, b: model.apply(p, b, train=False))(params, test)
    acc = float(np.mean(np.argmax(out.logits, -1) == test["label"]))
    r_b = np.asarray(out.reliability[:, 1])
    out_ood = jax.jit(lambda p, b: model.apply(p, b, train=False))(params, test_ood)
    acc_ood = float(np.mean(np.argmax(out_ood.logits, -1) == test_ood["label"]))
    return acc, acc_ood, r_b[~corrupt].mean(), r_b[corrupt].mean()

if __name__ == "__main__":
    settings = [
        ("uniform", "predictive", "barber_agakov", 0.0),
        ("imro", "predictive", "barber_agakov", 0.0),
        ("imro", "predictive", "barber_agakov", 1.0),
        ("imro", "predictive", "infonce", 1.0),
        ("imro", "gaussian", "barber_agakov", 1.0),
        ("imro", "embedding", "barber_agakov", 1.0),
    ]
    seeds = [int(s) for s in sys.argv[1:]] or [0, 1]
    print("| fusion | entropy | mi_bound | unimodal_weight | accuracy | accuracy, noise x3 | R_b clean | R_b corrupted |")
    print("|---|---|---|---|---|---|---|---|")
    for s in settings:
        t = time.time()
        res = np.array([run(*s, seed) for seed in seeds])
        mean, sd = res.mean(0), res.std(0)
        print(f"| {' | '.join(map(str, s))} | {mean[0]:.3f} +- {sd[0]:.3f} | {mean[1]:.3f} +- {sd[1]:.3f} | {mean[2]:.3f} | {mean[3]:.3f} |  ({time.time()-t:.0f}s)", flush=True)

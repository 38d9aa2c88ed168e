"""Runs the toy task through `imro_jax.train.loop.train` (a subprocess for kill/multi-host tests).

Usage: python toy_run.py WORKDIR [--config.key=value ...]; exit status as `imro train`
Environment: IMRO_TEST_CPU_DEVICES (CPU devices of this process, default 8),
IMRO_TEST_BATCH_DELAY (seconds each training batch takes to read, default 0: lets a test kill
the run mid-way).
"""

import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", int(os.environ.get("IMRO_TEST_CPU_DEVICES", "8")))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from imro_jax.cli import exit_status  # noqa: E402
from imro_jax.train import config as config_lib  # noqa: E402
from imro_jax.train import distributed, loop  # noqa: E402
from toy import ToyIterator, toy_config, toy_task  # noqa: E402


def _slow(next_batch, delay):
    def slow_next(self):
        time.sleep(delay)
        return next_batch(self)

    return slow_next


if __name__ == "__main__":
    if delay := float(os.environ.get("IMRO_TEST_BATCH_DELAY", "0")):
        ToyIterator.__next__ = _slow(ToyIterator.__next__, delay)
    workdir, overrides = sys.argv[1], sys.argv[2:]
    config = toy_config()
    for text in overrides:
        config_lib.apply_override(config, *config_lib.parse_override(text))
    distributed.initialize(config.mesh)
    sys.exit(exit_status(lambda: loop.train(config, workdir, toy_task(config))))

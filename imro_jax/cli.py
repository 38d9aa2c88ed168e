"""The `imro` command line.

    imro train --config trimodal --workdir runs/tri [--config.key=value ...]
    imro eval  --config trimodal --workdir runs/tri [--split test] [--step N]

`--config` is a shipped config's name (`imro_jax.configs`) or the path of a config file.

`train` starts a run or resumes the one in `--workdir` from its newest good checkpoint. `eval`
evaluates the best (by `checkpoint.best_metric`) or newest checkpoint, or `--step`. Any config key
can be overridden with `--config.section.key=value`. Configuration problems (unknown key, bad
value, a mesh that does not fit the devices, unusable checkpoints) end with one line
`imro: error: ...` and exit status 2.
"""

import argparse
import sys

from imro_jax import configs
from imro_jax.train.config import ConfigError, load_config

OVERRIDES_HELP = """config overrides (repeatable, after the other arguments or among them):
  --config.section.key=value   set any key of the config, parsed to the key's type, e.g.
                               --config.data.builder_config=small --config.train.num_steps=50
                               --config.optimizer.learning_rate=3e-4 --config.mesh.model=2
  an unknown key or a value of the wrong type is a one-line error (exit status 2); the keys
  and their meaning are in the config file (imro_jax/configs/trimodal.py documents every one)"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imro",
        description="Train and evaluate IMRO models.",
        epilog=OVERRIDES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("train", "train or resume a run"), ("eval", "evaluate a checkpoint")):
        sub = commands.add_parser(name, help=help_text, epilog=OVERRIDES_HELP, allow_abbrev=False,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--config", required=True,
                         help=f"a shipped config ({', '.join(configs.names())}) or a config file")
        sub.add_argument("--workdir", required=True, help="run directory (checkpoints, logs)")
        if name == "eval":
            sub.add_argument("--split", default="test", help="split to evaluate (default test)")
            sub.add_argument("--step", type=int, default=None, help="checkpoint (default best)")
    return parser


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.key=value` overrides from the other arguments."""
    overrides = [arg for arg in argv if arg.startswith("--config.")]
    return [arg for arg in argv if not arg.startswith("--config.")], overrides


def run(argv: list[str]) -> dict:
    """Parses `argv` and runs the command; returns its final metrics."""
    args_list, overrides = _split_overrides(argv)
    args = _parser().parse_args(args_list)
    config = load_config(configs.path(args.config), overrides)

    # Everything below may touch JAX: join the multi-process job first.
    import jax

    from imro_jax.train import distributed, loop, mesh

    distributed.initialize(config.mesh)
    mesh.resolve_mesh_shape(config.mesh.data, config.mesh.model, jax.device_count())
    from imro_jax.train.model_task import model_task

    task = model_task(config)
    if args.command == "train":
        return loop.train(config, args.workdir, task)
    metrics = loop.evaluate_checkpoint(config, args.workdir, task, args.split, args.step)
    if jax.process_index() == 0:
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in sorted(metrics.items())))
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Console entry point (`imro`)."""
    from imro_jax.train.checkpoint import CheckpointError
    from imro_jax.train.mesh import MeshError

    try:
        run(sys.argv[1:] if argv is None else list(argv))
    except (ConfigError, MeshError, CheckpointError) as error:
        print(f"imro: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

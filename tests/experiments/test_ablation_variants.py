"""Ablation variants yield valid configs that differ from IMRO's in what they name only; results name their command;
the experiments' run cache is the per-user one."""

import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))

import ablations  # noqa: E402
import common  # noqa: E402

from imro_jax.models import parse_model_config  # noqa: E402
from imro_jax.train.config import with_overrides  # noqa: E402


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@pytest.mark.parametrize("dataset", sorted(ablations.CONFIGS))
@pytest.mark.parametrize("variant", list(ablations.VARIANTS))
def test_variant_changes_only_what_it_names(dataset, variant):
    base = common.load_config(ablations.CONFIGS[dataset])
    overrides = ablations.VARIANTS[variant]
    config = with_overrides(base, overrides)
    spec = parse_model_config(config.model)
    changed = {k for k, v in _flat(config.to_dict()).items() if _flat(base.to_dict()).get(k, "absent") != v}
    if variant.startswith("IMRO"):
        assert changed == set() and not overrides
    else:  # exactly the keys it names, each to a value other than the default's, except that a variant
        # without the vote re-attaches the token fusion, a no-op where the config has it attached already
        assert changed and changed <= set(overrides), (changed, overrides)
        assert set(overrides) - changed <= {"model.reliability.joint_detached"}, (changed, overrides)
        if "model.reliability.joint_detached" in overrides:
            assert overrides["model.reliability.decision"] == 0.0 and spec.reliability.joint_detached is False
    if variant == "R unnormalised":
        assert spec.reliability.normalize is False
    assert base.model.reliability.to_dict() == common.load_config(ablations.CONFIGS[dataset]).model.reliability.to_dict()


def test_results_name_the_command_without_the_path_flags():
    argv = ["--seeds", "2", "--out", "/tmp/o", "--data_dir=/d", "--methods", "imro", "late", "--workdir", "w"]
    assert common.command_line("handwritten", argv) == "python experiments/handwritten.py --seeds 2 --methods imro late"
    assert common.command_line("synth", []) == "python experiments/synth.py"


def test_the_workdir_flag_defaults_to_the_per_user_run_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("IMRO_CACHE_DIR", str(tmp_path / "mine"))
    assert common.parse_args("synth", "", []).workdir == tmp_path / "mine" / "runs"

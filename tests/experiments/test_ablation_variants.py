"""Ablation variants yield valid configs that differ from IMRO's in what they name only; results name their command;
the experiments' run cache is the per-user one."""

import json
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


@pytest.mark.parametrize("dataset,variant", [(d, v) for d in sorted(ablations.CONFIGS) for v in ablations.VARIANTS
                                             if ablations.ONLY_ON.get(v, d) == d])
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
        if overrides.get("model.reliability.decision") == 0.0:  # no vote: the token fusion attached
            assert spec.reliability.joint_detached is False
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


def _numbers(dataset, value):
    return {ablations.DEFAULT: [dict.fromkeys(ablations.COLUMNS[dataset], value)]}


def test_rerunning_one_dataset_keeps_the_others_table_and_its_command(tmp_path):
    args = common.parse_args("ablations", "", ["--out", str(tmp_path)])
    args.command = "python experiments/ablations.py"
    ablations.write({"handwritten": _numbers("handwritten", 0.5), "synth": _numbers("synth", 0.25)},
                    {"handwritten": 500, "synth": 1000}, "full", args, ablations.kept_datasets(tmp_path, "full", ()))
    args.command = "python experiments/ablations.py --datasets handwritten"
    kept = ablations.kept_datasets(tmp_path, "full", ("handwritten",))
    assert set(kept["numbers"]) == {"synth"} and kept["commands"] == {"synth": "python experiments/ablations.py"}
    payload, markdown = ablations.write({"handwritten": _numbers("handwritten", 0.75)}, {"handwritten": 500},
                                        "full", args, kept)
    assert payload["numbers"]["synth"] == _numbers("synth", 0.25)  # kept as it was
    assert payload["numbers"]["handwritten"] == _numbers("handwritten", 0.75)  # replaced
    assert payload["commands"] == {"handwritten": "python experiments/ablations.py --datasets handwritten",
                                   "synth": "python experiments/ablations.py"}
    assert markdown.index("## handwritten") < markdown.index("## synth") and "not run" not in markdown
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["command"] == ("python experiments/ablations.py && "
                                  "python experiments/ablations.py --datasets handwritten")
    assert summary["methods"][ablations.DEFAULT]["handwritten clean acc"] == 75.0
    assert summary["methods"][ablations.DEFAULT]["synth clean acc"] == 25.0
    assert ablations.kept_datasets(tmp_path, "quick", ("handwritten",))["numbers"] == {}  # another mode: nothing kept


def test_a_variant_limited_to_one_config_is_not_run_on_the_other():
    for variant, dataset in ablations.ONLY_ON.items():
        for other in set(ablations.CONFIGS) - {dataset}:
            config = common.load_config(ablations.CONFIGS[other])
            assert with_overrides(config, ablations.VARIANTS[variant]).to_dict() == config.to_dict()


def test_kept_variants_come_back_in_the_table_order(tmp_path):
    args = common.parse_args("ablations", "", ["--out", str(tmp_path)])
    order = list(ablations.VARIANTS)
    table = {v: [dict.fromkeys(ablations.COLUMNS["synth"], 0.5)] for v in reversed(order[:4])}
    ablations.write({"synth": table}, {"synth": 1000}, "full", args, ablations.kept_datasets(tmp_path, "full", ()))
    kept = ablations.kept_datasets(tmp_path, "full", ("handwritten",))
    assert list(kept["numbers"]["synth"]) == order[:4]  # results.json stores them sorted by name

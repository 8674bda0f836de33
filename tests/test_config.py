"""Typed configs: every group option and preset composes; bad values stop before any work naming the key;
the method and category group files are exactly the engine's registries."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, ValidationError

from steering.config import SCHEMAS, config_dir, schema
from steering.config.hydra import structured

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
APPS = ("run", "signals", "train", "prepare", "report")
RUN_GROUPS = ("model", "data", "binning", "pathway", "layer", "method", "category", "tracking", "demo")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(app: str, *overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=app, overrides=list(overrides), return_hydra_config=hydra)


def error_text(exc: BaseException) -> str:
    """What Hydra prints for a composition error: its message and the OmegaConf cause."""
    return f"{exc}\n{exc.__cause__ or ''}"


def test_config_dir_is_the_checkout_conf_here():
    assert Path(config_dir()) == CONF


@pytest.mark.parametrize("app", APPS)
def test_every_app_composes_with_its_schema(app):
    cfg = composed(app)
    assert issubclass(OmegaConf.get_type(cfg), SCHEMAS[f"{app}_schema"])


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in RUN_GROUPS for o in options(g)])
def test_every_group_option_composes_into_the_run_schema(group, option):
    cfg = composed("run", f"{group}={option}")
    assert issubclass(OmegaConf.get_type(cfg[group]), type(schema.RunConfig().__dict__[group]))
    OmegaConf.to_container(cfg[group], throw_on_missing=True)  # every key the schema requires is set


@pytest.mark.parametrize("option", options("source"))
def test_every_source_option_composes_with_its_own_schema(option):
    cfg = composed("prepare", f"source={option}")
    assert issubclass(OmegaConf.get_type(cfg.source), SCHEMAS[f"source_{option}_schema"])
    assert cfg.source.name == option


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")))
def test_every_preset_composes_and_is_a_sweep(preset):
    cfg = composed("run", f"+experiment={preset}", hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN"  # runs as a sweep without -m
    assert cfg.hydra.sweeper.params


@pytest.mark.parametrize("approach", options("approach"))
def test_every_approach_composes(approach):
    cfg = composed("run", f"+approach={approach}")
    assert cfg.binning.name in options("binning") and cfg.layer.name in options("layer")


def test_keys_other_modules_add_are_in_the_schemas():
    cfg = composed("run")
    assert cfg.category.source == "final" and cfg.category.draws == 20
    assert cfg.model.trust_pickle is False
    assert {"enabled", "criterion", "split"} <= set(cfg.confirm)
    assert composed("run", "confirm=true").confirm is True  # the shorthand replaces the section
    assert composed("run", "category.source=pass1", "category.draws=3", "model.trust_pickle=true").category.draws == 3


@pytest.mark.parametrize(
    ("app", "override", "key", "problem"),
    [
        ("run", "strength=abc", "strength", "could not be converted to Float"),
        ("run", "strength=inf", "strength", "not a finite number"),
        ("run", "batch_size=-1", "batch_size", "must be >= 1"),
        ("run", "batch_size=1.5", "batch_size", "could not be converted to Integer"),
        ("run", "forward_passes=1", "forward_passes", "must be >= 2"),
        ("run", "precision=fp8", "precision", "is not one of: auto, fp32, bf16, fp16"),
        ("run", "threads=0", "threads", "must be >= 1"),
        ("run", "priming=maybe", "priming", "is not a valid bool"),
        ("run", "category.draws=0", "category.draws", "must be >= 1"),
        ("run", "category.source=pass2", "category.source", "is not one of: final, pass1"),
        ("run", "data.eval_split=tset", "data.eval_split", "is not one of"),
        ("run", "data.train_fraction=1.5", "data.train_fraction", "must be < 1.0"),
        ("run", "signals.split=everything", "signals.split", "is not one of"),
        ("run", "metrics.confidence=95", "metrics.confidence", "must be < 1.0"),
        ("run", "binning.min_samples=0", "binning.min_samples", "must be >= 1"),
        ("run", "binning.valence.thresholds=[low]", "binning.valence.thresholds[0]", "could not be converted"),
        ("run", "model.arch.embedding_size=-8", "model.arch.embedding_size", "must be >= 1"),
        ("run", "demo.train.epochs=0", "demo.train.epochs", "must be >= 1"),
        ("run", "stregth=1", "stregth", "Key 'stregth' not in 'RunConfig'"),
        ("signals", "split=bad", "split", "is not one of"),
        ("signals", "batch_size=0", "batch_size", "must be >= 1"),
        ("train", "train.lr=-1", "train.lr", "must be > 0.0"),
        ("train", "train.epochs=x", "train.epochs", "could not be converted to Integer"),
        ("prepare", "frontend.resampler=best", "frontend.resampler", "is not one of: auto, soxr_hq, poly"),
        ("prepare", "source.strict=perhaps", "source.strict", "is not a valid bool"),
        ("report", "log_to_parent=sometimes", "log_to_parent", "is not a valid bool"),
    ],
)
def test_bad_values_stop_at_composition_naming_the_key(app, override, key, problem):
    with pytest.raises(ConfigCompositionException) as info:
        composed(app, override)
    text = error_text(info.value)
    assert f"full_key: {key}" in text and problem in text


def test_bad_value_of_a_group_option_names_the_key():
    with pytest.raises(ConfigCompositionException) as info:
        composed("prepare", "source=synthetic", "source.n_clips=0")
    assert "full_key: source.n_clips" in error_text(info.value)


def test_checks_survive_deep_copy_and_pickling():
    """Hydra copies configs and the joblib launcher pickles them: the checks must travel with the nodes."""
    cfg = structured(schema.RunConfig)
    for clone in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        clone.batch_size = 4
        with pytest.raises(ValidationError, match="must be >= 1"):
            clone.batch_size = 0
        with pytest.raises(ValidationError, match="is not one of"):
            clone.precision = "fp8"
    merged = OmegaConf.merge(cfg, {"strength": 2})
    assert merged.strength == 2.0 and isinstance(merged.strength, float)
    with pytest.raises(ValidationError, match="not a finite number"):
        OmegaConf.merge(cfg, {"alpha": float("nan")})


def test_interpolated_values_are_checked_when_resolved():
    cfg = composed("train", "data.split=legacy")
    assert cfg.train.split == "legacy"  # ${data.split}, through the choice node


def registry_mismatch(conf: Path, group: str, registered: Iterable[str]) -> list[str]:
    """What differs between a group's YAML files (by file name and ``name:``) and a registry's names."""
    files = {p.stem: OmegaConf.load(p).get("name") for p in sorted((conf / group).glob("*.yaml"))}
    problems = [f"{stem}.yaml names {name!r}" for stem, name in files.items() if name != stem]
    problems += [f"{name}: registered in code, no {group}/{name}.yaml" for name in sorted(set(registered) - set(files))]
    problems += [f"{group}/{name}.yaml: nothing registered in code" for name in sorted(set(files) - set(registered))]
    return problems


def registries() -> dict[str, list[str]]:
    from steering.engine import CATEGORY_MODES, METHODS

    return {"method": list(METHODS), "category": list(CATEGORY_MODES)}


@pytest.mark.parametrize("group", ["method", "category"])
def test_group_files_are_exactly_the_registry(group):
    """Adding a method or a category mode is code plus YAML: forgetting either fails here."""
    assert registry_mismatch(CONF, group, registries()[group]) == []


def test_a_missed_step_of_adding_a_method_fails_the_registry_check(tmp_path):
    methods = registries()["method"]
    (tmp_path / "method").mkdir()
    for name in methods:
        (tmp_path / "method" / f"{name}.yaml").write_text(f"name: {name}\n")
    assert registry_mismatch(tmp_path, "method", methods) == []
    code_only = registry_mismatch(tmp_path, "method", [*methods, "toy"])
    assert code_only == ["toy: registered in code, no method/toy.yaml"]
    (tmp_path / "method" / "toy.yaml").write_text("name: toy\n")
    assert registry_mismatch(tmp_path, "method", methods) == ["method/toy.yaml: nothing registered in code"]
    (tmp_path / "method" / "toy.yaml").write_text("name: boy\n")
    assert registry_mismatch(tmp_path, "method", [*methods, "toy"]) == ["toy.yaml names 'boy'"]


def test_unknown_method_name_override_stops_before_any_work_naming_the_option(tmp_path):
    """``method=NAME`` is refused by Hydra; ``method.name=NAME`` by the run's option check, in one line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    overrides = [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"demo.cache_dir={tmp_path}/demo"]
    proc = subprocess.run(
        [sys.executable, "-m", "steering.run", "method.name=boost", *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(error) == 1 and "method.name" in error[0] and "boost" in error[0] and "lrm" in error[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "demo").exists()


def test_demo_schema_defaults_are_its_yaml():
    """Built by hand (no Hydra), the demo section is the one conf/demo/default.yaml gives."""
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / "demo" / "default.yaml"))
    by_hand = OmegaConf.to_container(OmegaConf.structured(schema.DemoConf()))
    for section in ("synthetic", "frontend", "train"):
        assert {k: by_hand[section][k] for k in yaml[section]} == yaml[section], section


#: Values for the keys that interpolate ${hydra:...} (resolved only inside an app).
OUTSIDE_AN_APP = {
    "run": ("cache.dir=/c", "demo.cache_dir=/c", "tracking.uri=sqlite:///m.db"),
    "signals": ("demo.cache_dir=/c", "output=s.json"),
    "train": ("checkpoint=m.pth", "demo.cache_dir=/c", "tracking.uri=sqlite:///m.db"),
    "prepare": ("output=f.h5",),
    "report": ("out=r", "tracking.uri=sqlite:///m.db"),
}


@pytest.mark.parametrize("app", APPS)
def test_to_object_gives_the_plain_dataclasses(app):
    typed = OmegaConf.to_object(composed(app, *OUTSIDE_AN_APP[app]))
    assert isinstance(typed, SCHEMAS[f"{app}_schema"])
    if app in ("run", "train"):
        assert isinstance(typed.demo.train, schema.TrainConf) and isinstance(typed.model.arch, schema.ArchConf)
        assert isinstance(typed.demo.frontend, schema.FrontendConf)
    if app == "prepare":
        assert isinstance(typed.source, schema.FolderSourceConf) and isinstance(typed.frontend, schema.FrontendConf)


def test_checks_apply_to_a_dataclass_built_by_hand():
    assert schema.TrainConf(epochs=3).epochs == 3
    with pytest.raises(ValueError, match="epochs: Value '0' must be >= 1"):
        schema.TrainConf(epochs=0)
    with pytest.raises(ValueError, match="resampler: Value 'linear' is not one of"):
        schema.FrontendConf(resampler="linear")
    with pytest.raises(ValueError, match="not a finite number"):
        schema.RunConfig(strength=float("inf"))


def test_command_line_error_is_short_and_creates_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "steering.run", "batch_size=-1"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode != 0
    assert "full_key: batch_size" in proc.stderr and "must be >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, no mlflow.db


def test_a_users_own_binning_on_the_search_path_is_checked_too(tmp_path):
    """README: your own binning YAML via hydra.searchpath; the schema still applies (and is still found)."""
    (tmp_path / "binning").mkdir()
    axis = "{thresholds: [0.0], names: [low, high]}"
    (tmp_path / "binning" / "quad.yaml").write_text(f"name: quad\nvalence: {axis}\narousal: {axis}\n")
    (tmp_path / "binning" / "bad.yaml").write_text("name: bad\nvalence: {thresholds: [x], names: [a, b]}\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    cfg = composed("run", searchpath, "binning=quad")
    assert cfg.binning.name == "quad" and cfg.binning.min_samples == 15  # the schema's default
    with pytest.raises(ConfigCompositionException) as info:
        composed("run", searchpath, "binning=bad")
    assert "full_key: binning.valence.thresholds[0]" in error_text(info.value)

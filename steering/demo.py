"""The embedded demo: synthetic features and a small trained model, built on first use and cached.

The cache directory is ``demo_cfg["cache_dir"]`` (or ``$STEERING_CACHE_DIR``); each build lives in
``demo-<hash>/``, the hash taken over the demo config (minus where and how fast it is built) and
the model architecture. A file lock serialises builders; every file is written atomically and
``info.json`` is written last, so a directory with ``info.json`` is complete.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from filelock import FileLock
from omegaconf import DictConfig

from steering.config import config_dir
from steering.data import FeatureFile, split_indices
from steering.errors import one_line_errors
from steering.model import ModelConfig, load_model
from steering.model.training import TrainConfig, evaluate, train_model
from steering.prepare import prepare_synthetic
from steering.util.cache import record_checksum, verify_file
from steering.util.files import atomic_write_text
from steering.util.hashing import json_digest

log = logging.getLogger(__name__)
CACHE_ENV = "STEERING_CACHE_DIR"
CACHE_FORMAT = 1  # bump when the build recipe changes in a way the config does not show
NOT_HASHED = ("cache_dir", "workers", "progress")


@dataclass(frozen=True)
class DemoAssets:
    """Paths of the demo's feature file and checkpoint, and what its build measured."""

    features: Path
    checkpoint: Path
    info: dict[str, Any] = field(default_factory=dict, compare=False)


def _plain(obj: Any) -> Any:
    """OmegaConf containers and mappings -> plain dicts/lists (resolved)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def cache_root(demo_cfg: Mapping) -> Path:
    """``$STEERING_CACHE_DIR`` if set, else ``demo_cfg["cache_dir"]``, else ``./.cache/steering``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    value = demo_cfg.get("cache_dir") if isinstance(demo_cfg, Mapping) else None
    return Path(value).expanduser() if value else Path.cwd() / ".cache" / "steering"


def demo_key(demo_cfg: Mapping, model_arch: Mapping) -> str:
    """Hash of the parts of the config that change the assets."""
    recipe = {k: v for k, v in demo_cfg.items() if k not in NOT_HASHED}
    arch = ModelConfig.from_mapping(model_arch).to_dict()
    return json_digest({"format": CACHE_FORMAT, "demo": recipe, "arch": arch}, 16)


def _locked(path: Path) -> FileLock:
    """An exclusive lock file: one builder at a time, across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def _write_json(path: Path, data: Mapping) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def _plain_cfg(demo_cfg: Mapping) -> dict[str, Any]:
    """Plain copy of the demo config; ``cache_dir`` is not resolved when the env variable overrides it."""
    skip_cache_dir = bool(os.environ.get(CACHE_ENV))
    return {str(k): _plain(demo_cfg[k]) for k in demo_cfg if not (k == "cache_dir" and skip_cache_dir)}


def demo_features(demo_cfg: Mapping) -> Path:
    """The synthetic feature file of the demo config, built once and cached (keyed by synthetic + frontend)."""
    cfg = _plain_cfg(demo_cfg)
    recipe = {"synthetic": cfg.get("synthetic"), "frontend": cfg.get("frontend")}
    key = demo_key(recipe, {})
    path = cache_root(cfg) / f"features-{key}.h5"
    with _locked(path.with_suffix(".lock")):
        if verify_file(path, "synthetic features", unrecorded="record"):
            log.info("using cached synthetic features %s", path)
            return path
        log.info("generating synthetic features %s", path)
        prepare_synthetic(
            path, cfg.get("synthetic"), cfg.get("frontend"), int(cfg.get("workers", 0)), bool(cfg.get("progress", True))
        )
        record_checksum(path)
    return path


def ensure_demo(demo_cfg: Mapping, model_arch: Mapping) -> DemoAssets:
    """Build (or reuse from the cache) the synthetic feature file and the trained demo model."""
    cfg = _plain_cfg(demo_cfg)
    arch = _plain(model_arch)
    key = demo_key(cfg, arch)
    root = cache_root(cfg) / f"demo-{key}"
    info_path = root / "info.json"
    checkpoint = root / "model.pth"
    with _locked(root.parent / f"demo-{key}.lock"):
        features = demo_features(cfg)
        if info_path.is_file() and verify_file(checkpoint, "demo model", unrecorded="record"):
            log.info("using cached demo model %s", checkpoint)
            return DemoAssets(features, checkpoint, json.loads(info_path.read_text()))
        log.info("training the demo model in %s (first use; a few minutes on a small CPU)", root)
        info = _build(cfg, arch, features, checkpoint)
        record_checksum(checkpoint)
        _write_json(info_path, info)
    return DemoAssets(features, checkpoint, info)


def _build(cfg: Mapping, arch: Mapping, features: Path, checkpoint: Path) -> dict[str, Any]:
    start = time.perf_counter()
    progress = bool(cfg.get("progress", True))
    train_cfg = TrainConfig.from_mapping({**dict(cfg.get("train") or {}), "progress": progress})
    result = train_model(features, arch, train_cfg, checkpoint)
    model = load_model(checkpoint)
    with FeatureFile(features) as ff:
        test = evaluate(model, ff, split_indices(len(ff), "test", train_cfg.split, train_cfg.train_fraction))
    info: dict[str, Any] = {
        "config": cfg,
        "arch": arch,
        "best_val_pearson": result.best_val_pearson,
        "best_epoch": result.best_epoch,
        **test.summary("test"),
        "seconds_training": round(time.perf_counter() - start, 1),
    }
    log.info(
        "demo model trained in %.0f s: test r valence %.3f, arousal %.3f; feedback moves predictions by %.3f / %.3f",
        info["seconds_training"],
        info["test_r_valence"],
        info["test_r_arousal"],
        info["test_feedback_effect_valence"],
        info["test_feedback_effect_arousal"],
    )
    return info


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> None:
    """``python -m steering.demo``: build (or reuse) the demo assets and print where they are."""
    assets = ensure_demo(cfg.demo, cfg.model.arch)
    info = assets.info
    log.info("features   %s", assets.features)
    log.info("checkpoint %s", assets.checkpoint)
    log.info(
        "test r: valence %.3f, arousal %.3f; mean |pass2 - pass1|: valence %.3f, arousal %.3f",
        info["test_r_valence"],
        info["test_r_arousal"],
        info["test_feedback_effect_valence"],
        info["test_feedback_effect_arousal"],
    )


if __name__ == "__main__":
    from steering.errors import run_app

    run_app(main)

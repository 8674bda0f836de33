"""The embedded demo: synthetic features and a small trained model, built on first use and cached.

The cache directory is ``demo.cache_dir`` (or ``$STEERING_CACHE_DIR``); each build lives in
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from steering.audio.render import prepare_synthetic
from steering.config.fields import MISSING
from steering.config.schema import ArchConf, DemoConf
from steering.data import FeatureFile, split_indices
from steering.model import ModelConfig, load_model
from steering.training.loop import evaluate, train_model
from steering.util.cache import record_checksum, verify_file
from steering.util.files import atomic_write_text
from steering.util.hashing import json_digest

log = logging.getLogger(__name__)
CACHE_ENV = "STEERING_CACHE_DIR"
CACHE_FORMAT = 1  # bump when the build recipe changes in a way the config does not show
NOT_HASHED = ("cache_dir", "workers", "progress")
#: Keys of each section that every cache key covers: those the demo recipe has always had. The
#: sections are now the apps' own dataclasses (TrainConf, FrontendConf, SyntheticConf); a key they
#: add enters the key only when set away from the demo's default, so cached builds keep their key.
KEYED = {
    "synthetic": ("n_clips", "duration", "seed", "rater_noise", "parameter_jitter"),
    "frontend": (
        "sample_rate",
        "n_fft",
        "hop_length",
        "mel_bins",
        "fmin",
        "fmax",
        "top_db",
        "frames",
        "pad_with_floor",
    ),
    "train": ("epochs", "batch_size", "lr", "forward_passes", "pass_weights", "split", "seed", "num_threads"),
}
NOT_HASHED_TRAIN = ("progress",)  # the demo's own ``progress`` drives it


@dataclass(frozen=True)
class DemoAssets:
    """Paths of the demo's feature file and checkpoint, and what its build measured."""

    features: Path
    checkpoint: Path
    info: dict[str, Any] = field(default_factory=dict, compare=False)


def cache_root(demo: DemoConf) -> Path:
    """``$STEERING_CACHE_DIR`` if set, else ``demo.cache_dir``, else ``./.cache/steering``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    value = demo.cache_dir
    return Path(value).expanduser() if value and value != MISSING else Path.cwd() / ".cache" / "steering"


def _section(name: str, demo: DemoConf) -> dict[str, Any]:
    values, default = asdict(getattr(demo, name)), asdict(getattr(DemoConf(), name))
    skip = NOT_HASHED_TRAIN if name == "train" else ()
    return {k: v for k, v in values.items() if k in KEYED[name] or (k not in skip and v != default[k])}


def _key(recipe: Mapping[str, Any], arch: Mapping[str, Any]) -> str:
    return json_digest({"format": CACHE_FORMAT, "demo": recipe, "arch": arch}, 16)


def demo_key(demo: DemoConf, arch: ArchConf) -> str:
    """Hash of the parts of the config that change the assets (not where or how fast they are built)."""
    recipe = {name: _section(name, demo) for name in KEYED}
    return _key(recipe, ModelConfig.from_arch(arch).to_dict())


def features_key(demo: DemoConf) -> str:
    """Hash of what changes the demo's feature file: its synthetic set and front end."""
    return _key({name: _section(name, demo) for name in ("synthetic", "frontend")}, ModelConfig().to_dict())


def _locked(path: Path) -> FileLock:
    """An exclusive lock file: one builder at a time, across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def _write_json(path: Path, data: Mapping) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def demo_features(demo: DemoConf) -> Path:
    """The synthetic feature file of the demo config, built once and cached (keyed by synthetic + frontend)."""
    path = cache_root(demo) / f"features-{features_key(demo)}.h5"
    with _locked(path.with_suffix(".lock")):
        if verify_file(path, "synthetic features", unrecorded="record"):
            log.info("using cached synthetic features %s", path)
            return path
        log.info("generating synthetic features %s", path)
        prepare_synthetic(path, demo.synthetic, demo.frontend, demo.workers, demo.progress)
        record_checksum(path)
    return path


def ensure_demo(demo: DemoConf, arch: ArchConf) -> DemoAssets:
    """Build (or reuse from the cache) the synthetic feature file and the trained demo model."""
    key = demo_key(demo, arch)
    root = cache_root(demo) / f"demo-{key}"
    info_path = root / "info.json"
    checkpoint = root / "model.pth"
    with _locked(root.parent / f"demo-{key}.lock"):
        features = demo_features(demo)
        if info_path.is_file() and verify_file(checkpoint, "demo model", unrecorded="record"):
            log.info("using cached demo model %s", checkpoint)
            return DemoAssets(features, checkpoint, json.loads(info_path.read_text()))
        log.info("training the demo model in %s (first use; a few minutes on a small CPU)", root)
        info = _build(demo, arch, features, checkpoint)
        record_checksum(checkpoint)
        _write_json(info_path, info)
    return DemoAssets(features, checkpoint, info)


def _build(demo: DemoConf, arch: ArchConf, features: Path, checkpoint: Path) -> dict[str, Any]:
    start = time.perf_counter()
    train = replace(demo.train, progress=demo.progress)
    result = train_model(features, arch, train, checkpoint)
    model = load_model(checkpoint)
    with FeatureFile(features) as ff:
        test = evaluate(model, ff, split_indices(len(ff), "test", train.split, train.train_fraction))
    config = asdict(demo)
    if os.environ.get(CACHE_ENV):
        config.pop("cache_dir")  # where it was built is not part of the recipe
    info: dict[str, Any] = {
        "config": config,
        "arch": asdict(arch),
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

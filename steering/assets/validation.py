"""Checks run before any work: option values, input files against each other and the model.

Each check raises a known error naming the option or the file (:class:`steering.errors.ConfigError`,
``FeatureFileError``, ``SignalFileError``, ``CheckpointError``), so an app stops in one line
before it opens an MLflow run, builds the demo or computes anything.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steering.errors import ConfigError, ResultError

#: Cnn6 halves time and frequency in each of its 4 blocks.
MIN_FRAMES = 16
MIN_EVAL_CLIPS = 10
#: Resamples that must fall in each tail of the bootstrap interval (below the lower, above the upper bound).
MIN_TAIL_RESAMPLES = 2
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


# --------------------------------------------------------------------------- option values
def finite_number(cfg: Mapping, option: str, *, low: float | None = None, high: float | None = None) -> float:
    """``cfg[option]`` as a finite float (optionally within [low, high])."""
    value = _select(cfg, option)
    if isinstance(value, bool):
        raise ConfigError(option, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(option, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(option, f"must be a finite number, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise ConfigError(option, f"must lie in [{low}, {high}], got {value!r}")
    return number


def integer(cfg: Mapping, option: str, minimum: int | None = None) -> int:
    """``cfg[option]`` as an int (no silent truncation of 2.5), at least ``minimum``."""
    value = _select(cfg, option)
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise ConfigError(option, f"must be an integer, got {value!r}")
    try:
        number = int(value) if not isinstance(value, float) else None
    except ValueError:
        number = None
    if number is None:
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            raise ConfigError(option, f"must be an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise ConfigError(option, f"must be >= {minimum}, got {value!r}")
    return number


def choice(cfg: Mapping, option: str, choices: Sequence[str]) -> str:
    value = _select(cfg, option)
    if str(value) not in choices:
        raise ConfigError(option, f"must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def check_device(cfg: Mapping, option: str = "device") -> None:
    """``auto``, ``cpu``, ``cuda[:N]`` (only with CUDA) or ``mps`` (only with MPS)."""
    value = str(_select(cfg, option))
    kind, _, index = value.partition(":")
    if kind not in DEVICE_KINDS or (index and not index.isdigit()):
        raise ConfigError(option, f"must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(option, f"{value!r} asked for, but CUDA is not available here (use device=auto or cpu)")
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(option, f"{value!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(option, "'mps' asked for, but MPS is not available here")


def check_bootstrap(cfg: Mapping, prefix: str = "metrics") -> None:
    """Enough resamples that each tail of the interval holds at least ``MIN_TAIL_RESAMPLES``."""
    confidence = finite_number(cfg, f"{prefix}.confidence")
    if not 0 < confidence < 1:
        raise ConfigError(f"{prefix}.confidence", f"must lie strictly between 0 and 1, got {confidence!r}")
    resamples = integer(cfg, f"{prefix}.bootstrap_resamples", minimum=1)
    needed = math.ceil(MIN_TAIL_RESAMPLES / ((1 - confidence) / 2) - 1e-9)
    if resamples < needed:
        raise ConfigError(
            f"{prefix}.bootstrap_resamples",
            f"{resamples} is too few for a {confidence:g} interval (each tail needs {MIN_TAIL_RESAMPLES} resamples: "
            f"use at least {needed})",
        )
    integer(cfg, f"{prefix}.seed")


def check_run_options(cfg: Mapping) -> None:
    """The option values of ``conf/run.yaml`` (no file is touched)."""
    from steering.data.binning import Binning
    from steering.data.splits import SPLIT_NAMES
    from steering.engine.assign import CATEGORY_MODES, CATEGORY_SOURCES
    from steering.engine.spec import METHODS, PATHWAY_CHOICES

    finite_number(cfg, "strength")
    finite_number(cfg, "alpha")
    integer(cfg, "batch_size", minimum=1)
    integer(cfg, "forward_passes", minimum=2)
    integer(cfg, "seed")
    check_device(cfg)
    choice(cfg, "precision", PRECISIONS)
    tolerance = finite_number(cfg, "precision_tolerance")
    if tolerance <= 0:
        raise ConfigError("precision_tolerance", f"must be > 0, got {tolerance!r}")
    threads = _select(cfg, "threads", None)
    if threads is not None and threads != "auto":
        integer(cfg, "threads", minimum=1)
    check_bootstrap(cfg)
    choice(cfg, "method.name", METHODS)
    choice(cfg, "pathway.name", PATHWAY_CHOICES)
    choice(cfg, "category.name", CATEGORY_MODES)
    if _select(cfg, "category.source", None) is not None:  # optional for configs built without the schema
        choice(cfg, "category.source", CATEGORY_SOURCES)
    if _select(cfg, "category.draws", None) is not None:
        integer(cfg, "category.draws", minimum=1)
    check_data_options(cfg)
    choice(cfg, "data.eval_split", SPLIT_NAMES)
    choice(cfg, "signals.split", SPLIT_NAMES)
    if not isinstance(_select(cfg, "signals.path", None), str | type(None)):
        raise ConfigError("signals.path", "must be a file path or null")
    binning = Binning.from_conf(cfg["binning"])
    if cfg["category"]["name"] == "fixed":
        target = _select(cfg, "category.target", None)
        if not target:
            raise ConfigError("category.target", "category=fixed needs a target category")
        try:
            binning.canonical(str(target))
        except ValueError as exc:
            raise ConfigError("category.target", str(exc)) from None


def check_data_options(cfg: Mapping) -> None:
    from steering.data.splits import SCHEMES

    choice(cfg, "data.split", SCHEMES)
    fraction = finite_number(cfg, "data.train_fraction")
    if not 0 < fraction < 1:
        raise ConfigError("data.train_fraction", f"must lie strictly between 0 and 1, got {fraction!r}")


def check_input_paths(cfg: Mapping) -> None:
    """Given checkpoint and feature file exist (before a demo is built for the missing one)."""
    for option in ("model.checkpoint", "data.path"):
        value = _select(cfg, option, None)
        if value is None:
            continue
        path = Path(str(value)).expanduser()
        if not path.exists():
            raise ConfigError(option, f"{path} does not exist")
        if not path.is_file():
            raise ConfigError(option, f"{path} is not a file")


# --------------------------------------------------------------------------- files against the model
def check_features(ff, mel_bins: int, indices: np.ndarray | None = None, *, what: str = "evaluated") -> None:
    """Mel width and frame count the model can take; finite features in the rows that will be read."""
    from steering.data import FeatureFileError

    if ff.mel_bins != mel_bins:
        raise FeatureFileError(f"{ff.path}: features have {ff.mel_bins} mel bins, the model expects {mel_bins}")
    if ff.frames < MIN_FRAMES:
        raise FeatureFileError(
            f"{ff.path}: clips have {ff.frames} frames; the model needs at least {MIN_FRAMES} (4 blocks halve time)"
        )
    bad = nonfinite_rows(ff.path)
    if indices is not None:
        bad = np.intersect1d(bad, np.asarray(indices, dtype=np.int64))
    if bad.size:
        raise FeatureFileError(
            f"{ff.path}: 'feature' has NaN/inf values in {bad.size} {what} clip(s), first at indices {bad[:5].tolist()}"
        )


def nonfinite_rows(path: str | Path) -> np.ndarray:
    """Indices of clips whose features hold NaN/inf (remembered per process while the file is unchanged)."""
    stat = Path(path).stat()
    return _nonfinite_rows(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns).copy()


@functools.lru_cache(maxsize=16)
def _nonfinite_rows(path: str, _size: int, _mtime_ns: int) -> np.ndarray:
    import h5py

    bad: list[np.ndarray] = []
    with h5py.File(path, "r") as h5:
        feature = h5["feature"]
        step = max(1, (64 << 20) // max(1, feature.shape[1] * feature.shape[2] * 4))
        for start in range(0, feature.shape[0], step):
            block = feature[start : start + step]
            rows = ~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
            bad.append(np.flatnonzero(rows) + start)
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def check_eval_count(n: int, cfg: Mapping) -> None:
    if n < MIN_EVAL_CLIPS:
        split = _select(cfg, "data.eval_split", "?")
        raise ConfigError(
            "data.eval_split",
            f"{split!r} holds {n} clip(s) of the feature file; at least {MIN_EVAL_CLIPS} are needed for the statistics",
        )


def check_signals(signals, source_dim: int, category: str, fixed_target: str | None = None) -> None:
    """A signal set the model and the category mode can use."""
    from steering.signals.io import SignalFileError

    where = signals.source_path or "signals"
    dims = {v.shape[-1] for vectors in signals.vectors.values() for v in vectors.values()}
    if dims - {source_dim}:
        raise SignalFileError(f"{where}: signals have {sorted(dims)} values, the model's source size is {source_dim}")
    if category == "fixed" and fixed_target and fixed_target not in signals.vectors:
        have = list(signals.vectors)
        raise SignalFileError(f"{where}: no signal for the fixed target {fixed_target!r}; it has {have}")
    if category == "shuffled" and len(signals.vectors) < 2:
        raise SignalFileError(f"{where}: the shuffled control needs signals for at least two categories")


# --------------------------------------------------------------------------- results
def check_finite_results(metrics: Mapping[str, float], predictions, columns: Sequence[str]) -> None:
    """Fail a run whose predictions or metrics are not finite numbers, saying which."""
    bad_cols = [c for c in columns if c in predictions and not np.isfinite(predictions[c].to_numpy(float)).all()]
    if bad_cols:
        raise ResultError(
            f"non-finite predictions in {', '.join(bad_cols)} (an extreme strength or signal overflows the model)"
        )
    bad = sorted(k for k, v in metrics.items() if v is None or not math.isfinite(float(v)))
    if bad:
        raise ResultError(
            f"{len(bad)} metric(s) are not finite ({', '.join(bad[:6])}{', ...' if len(bad) > 6 else ''}): "
            "constant or degenerate predictions"
        )


def _select(cfg: Mapping, dotted: str, default: Any = ...) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is ...:
                raise ConfigError(dotted, "is missing from the config")
            return default
        node = node[part]
    return node


def check_run_inputs(cfg: Mapping, model, features: str | Path, binning) -> None:
    """The feature file and the signal file against the model, the binning and the evaluated split."""
    from steering.data import FeatureFile, split_indices
    from steering.signals import load_signals

    def indices(option: str, n: int) -> np.ndarray:
        try:
            return split_indices(n, _select(cfg, option), cfg["data"]["split"], cfg["data"]["train_fraction"])
        except ValueError as exc:
            raise ConfigError(option, str(exc)) from None

    with FeatureFile(features) as ff:
        n = len(ff)
        eval_idx = indices("data.eval_split", n)
        check_eval_count(len(eval_idx), cfg)
        used = [eval_idx]
        if not _select(cfg, "signals.path", None):
            used.append(indices("signals.split", n))
        check_features(ff, model.config.mel_bins, np.unique(np.concatenate(used)), what="used")
    path = _select(cfg, "signals.path", None)
    if path:
        target = _select(cfg, "category.target", None)
        fixed = binning.canonical(str(target)) if cfg["category"]["name"] == "fixed" and target else None
        check_signals(load_signals(path, binning), model.config.source_dim, cfg["category"]["name"], fixed)


def prediction_columns(predictions) -> list[str]:
    """Columns of predictions.csv that hold model outputs."""
    return [c for c in predictions.columns if c.startswith(("base_", "steered_"))]


def check_output_path(cfg: Mapping, option: str = "output") -> Path:
    """An output file path that is not a directory and whose folder can be created."""
    value = _select(cfg, option, None)
    if not value:
        raise ConfigError(option, "is not set")
    path = Path(str(value)).expanduser()
    if path.is_dir():
        raise ConfigError(option, f"{path} is a directory; give a file path")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK)):
        raise ConfigError(option, f"cannot write into {existing}")
    return path


def check_signals_options(cfg: Mapping) -> None:
    """``conf/signals.yaml``: split, data options, batch size, device, output, given files."""
    from steering.data.splits import SPLIT_NAMES

    choice(cfg, "split", SPLIT_NAMES)
    check_data_options(cfg)
    integer(cfg, "batch_size", minimum=1)
    check_device(cfg)
    if _select(cfg, "min_samples", None) is not None:
        integer(cfg, "min_samples", minimum=1)
    check_output_path(cfg)
    check_input_paths(cfg)


def check_train_options(cfg: Mapping) -> None:
    """``conf/train.yaml``: training hyper-parameters, device, output checkpoint, given files."""
    from steering.config.schema import TrainConf
    from steering.model.training import check_settings

    given = cfg["train"]  # keys left out take TrainConf's defaults
    for option in ("epochs", "batch_size", "eval_batch_size", "forward_passes"):
        if option in given:
            integer(cfg, f"train.{option}", minimum=1)
    if "lr" in given and finite_number(cfg, "train.lr") <= 0:
        raise ConfigError("train.lr", f"must be > 0, got {_select(cfg, 'train.lr')!r}")
    if "weight_decay" in given and finite_number(cfg, "train.weight_decay") < 0:
        raise ConfigError("train.weight_decay", "must be >= 0")
    if "device" in given:
        check_device(cfg, "train.device")
    for key in ("pass_weights", "target_weights"):
        weights = _select(cfg, f"train.{key}", [])
        for i in range(len(weights)):
            _finite_item(weights, i, f"train.{key}")
    check_data_options(cfg)
    check_input_paths(cfg)
    check_output_path(cfg, "checkpoint")
    try:
        check_settings(TrainConf(**dict(cfg["train"])))
    except (TypeError, ValueError) as exc:
        raise ConfigError("train", str(exc)) from None


def _finite_item(values: Sequence, i: int, option: str) -> None:
    try:
        ok = math.isfinite(float(values[i]))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(option, f"must hold finite numbers, got {list(values)!r}")


def check_train_features(cfg: Mapping, features: str | Path, mel_bins: int) -> None:
    """A feature file the model can train on: width, frames, finite values in train and val, enough clips."""
    from steering.data import FeatureFile, FeatureFileError, split_indices

    with FeatureFile(features) as ff:
        scheme, fraction = _select(cfg, "train.split", "threeway"), _select(cfg, "train.train_fraction", 0.7)
        train = split_indices(len(ff), "train", scheme, fraction)
        val = split_indices(len(ff), "val", scheme, fraction)
        if len(train) == 0 or len(val) < 2:
            raise FeatureFileError(f"{ff.path}: {len(ff)} clips are too few for a train/val split")
        check_features(ff, mel_bins, np.concatenate([train, val]), what="train/val")

"""Checks run before any work that the config schema cannot state.

The schema (``steering.config.schema``) already checked every type, range and choice while Hydra
composed the config. What is left: the environment (is the asked-for device here), rules across
fields (bootstrap tails, a fixed target of the binning, splits of the feature file), files against
each other and the model, and finite results. Each check raises a known error naming the option
or the file (:class:`steering.errors.ConfigError`, ``FeatureFileError``, ``SignalFileError``,
``CheckpointError``, ``ResultError``), so an app stops in one line before it opens an MLflow run,
builds the demo or computes anything.

The checks read the typed config by attribute (``cfg.data.path``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from steering.errors import ConfigError, ResultError

if TYPE_CHECKING:
    from steering.config.schema import RunConfig
    from steering.data.binning import Binning

#: Cnn6 halves time and frequency in each of its 4 blocks.
MIN_FRAMES = 16
MIN_EVAL_CLIPS = 10
#: Resamples that must fall in each tail of the bootstrap interval (below the lower, above the upper bound).
MIN_TAIL_RESAMPLES = 2
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


def _option(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg.a.b`` for ``"a.b"`` (a typed config, or a plain mapping), or ``default`` where a part is absent."""
    node = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else getattr(node, part, None)
    return default if node is None else node


# --------------------------------------------------------------------------- options (what the schema cannot say)
def check_device(value: str, option: str = "device") -> None:
    """``auto``, ``cpu``, ``cuda[:N]`` (only with CUDA) or ``mps`` (only with MPS): what this machine has."""
    value = str(value)
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


def check_bootstrap(resamples: int, confidence: float, prefix: str = "metrics") -> None:
    """Enough resamples that each tail of the interval holds at least ``MIN_TAIL_RESAMPLES``."""
    needed = math.ceil(MIN_TAIL_RESAMPLES / ((1 - confidence) / 2) - 1e-9)
    if resamples < needed:
        raise ConfigError(
            f"{prefix}.bootstrap_resamples",
            f"{resamples} is too few for a {confidence:g} interval (each tail needs {MIN_TAIL_RESAMPLES} resamples: "
            f"use at least {needed})",
        )


def check_run_options(cfg: RunConfig) -> Binning:
    """Rules of ``conf/run.yaml`` the schema cannot state (it already checked types, ranges, choices).

    How the signals are made (:func:`check_signal_recipe`), the device this machine has, the bootstrap
    tail rule, a binning that holds together and a fixed target that is one of its categories. No file
    is touched. Returns the checked binning.
    """
    from steering.data.binning import Binning
    from steering.engine.categories import CATEGORY_MODES
    from steering.engine.methods import METHODS

    # The conf/ group files list the choices; a name set directly (method.name=...) meets the registries here.
    for option, value, registry in (
        ("method.name", cfg.method.name, METHODS),
        ("category.name", cfg.category.name, CATEGORY_MODES),
    ):
        if value not in registry:
            raise ConfigError(option, f"must be one of {', '.join(registry)}, got {value!r}")
    mode = CATEGORY_MODES[cfg.category.name]
    check_signal_recipe(cfg, mode)
    check_device(cfg.device)
    check_bootstrap(int(cfg.metrics.bootstrap_resamples), float(cfg.metrics.confidence))
    binning = Binning.from_conf(cfg.binning)
    if "target" in mode.needs:
        target = cfg.category.target
        if not target:
            raise ConfigError("category.target", "category=fixed needs a target category")
        try:
            binning.canonical(str(target))
        except ValueError as exc:
            raise ConfigError("category.target", str(exc)) from None
    return binning


def check_signal_recipe(cfg: RunConfig, mode: Any) -> None:
    """``signals.method``, ``signals.labels`` and ``signals.optimize`` against each other and the run.

    A given ``signals.path`` is used as it is, so it takes no recipe; ``knn`` reads no labels and gives
    each clip its own signal, so it takes neither a label control nor a category mode that draws
    signals at random or steers toward one target; ``optimized`` fits through the shared work, which
    priming changes (pass 1 itself is steered).
    """
    sig = cfg.signals
    if sig.path and (sig.method != "mean" or sig.labels != "observed"):
        option = "signals.method" if sig.method != "mean" else "signals.labels"
        value = sig.method if sig.method != "mean" else sig.labels
        raise ConfigError(
            option, f"{value} makes signals from signals.split, but signals.path={sig.path} gives them (drop one)"
        )
    if sig.method == "knn":
        if sig.labels != "observed":
            raise ConfigError("signals.labels", f"{sig.labels} with signals.method=knn: knn reads no labels")
        if mode.multi_draw or "target" in mode.needs:
            raise ConfigError(
                "signals.method",
                f"knn gives each clip the signal of its nearest clips; category={mode.name} "
                f"({'draws signals at random' if mode.multi_draw else 'steers toward one target'}) cannot use it",
            )
    if sig.method != "optimized":
        return
    steps = list(sig.optimize.step_sizes or [])
    if not steps or not all(_finite(s) and float(s) > 0 for s in steps):
        raise ConfigError("signals.optimize.step_sizes", f"must be a non-empty list of positive numbers, got {steps}")
    if cfg.priming:
        raise ConfigError(
            "signals.method", "optimized fits through the shared work of pass 1, which priming=true steers (use one)"
        )


def check_input_paths(cfg: Any) -> None:
    """Given checkpoint and feature file exist (before a demo is built for the missing one)."""
    for option in ("model.checkpoint", "data.path"):
        value = _option(cfg, option)
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


def device_memory(device: torch.device | str) -> int | None:
    """Bytes of memory on ``device``: the GPU's own, or RAM within this process's cgroup limit; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device.index or torch.cuda.current_device()).total_memory)
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def check_batch_memory(ff, model, batch_size: int, option: str = "batch_size") -> None:
    """One batch through the model's first block (its input and output maps) fits the model's device.

    Only what cannot work is refused: long clips with a large batch fail here in one line instead of
    running out of memory mid-run.
    """
    from steering.data.features import human_bytes

    param = next(model.parameters(), None)
    have = device_memory(param.device if param is not None else "cpu")
    clips = max(1, min(int(batch_size), len(ff)))
    per_clip = 2 * model.config.channels[0] * ff.frames * ff.mel_bins * 4
    if have is None or clips * per_clip <= have:
        return
    advice = f"use batch_size={have // per_clip} or less" if have >= per_clip else "cut the clips shorter"
    raise ConfigError(
        option,
        f"{batch_size}: a batch of {clips} clips of {ff.frames} frames from {ff.path} needs about "
        f"{human_bytes(clips * per_clip)} in the model's first block, more than the {human_bytes(have)} here "
        f"({advice})",
    )


def nonfinite_rows(path: str | Path) -> np.ndarray:
    """Indices of clips whose features hold NaN/inf (remembered per process while the file is unchanged)."""
    stat = Path(path).stat()
    return _nonfinite_rows(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns).copy()


@functools.lru_cache(maxsize=16)
def _nonfinite_rows(path: str, _size: int, _mtime_ns: int) -> np.ndarray:
    """Read in blocks of at most 64 MiB (whole HDF5 chunks where the file is chunked by clip)."""
    import h5py

    from steering.data import FeatureFileError

    bad: list[np.ndarray] = []
    start = 0
    try:
        with h5py.File(path, "r") as h5:
            feature = h5["feature"]
            step = max(1, (64 << 20) // max(1, feature.shape[1] * feature.shape[2] * 4))
            if feature.chunks:  # a whole number of chunks per block: each chunk is decompressed once
                step = max(feature.chunks[0], step // feature.chunks[0] * feature.chunks[0])
            for start in range(0, feature.shape[0], step):
                block = feature[start : start + step]
                rows = ~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
                bad.append(np.flatnonzero(rows) + start)
    except (OSError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise FeatureFileError(f"{path}: cannot read 'feature' near index {start} ({first})") from None
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def check_eval_count(n: int, split: str) -> None:
    if n < MIN_EVAL_CLIPS:
        raise ConfigError(
            "data.eval_split",
            f"{split!r} holds {n} clip(s) of the feature file; at least {MIN_EVAL_CLIPS} are needed for the statistics",
        )


def check_signals(signals, source_dim: int, category: str, fixed_target: str | None = None) -> None:
    """A signal set the model and the category mode can use."""
    from steering.engine.categories import category_mode
    from steering.signals.io import SignalFileError

    mode = category_mode(category)
    where = signals.source_path or "signals"
    dims = {v.shape[-1] for vectors in signals.vectors.values() for v in vectors.values()}
    if dims - {source_dim}:
        raise SignalFileError(f"{where}: signals have {sorted(dims)} values, the model's source size is {source_dim}")
    if "target" in mode.needs and fixed_target and fixed_target not in signals.vectors:
        have = list(signals.vectors)
        raise SignalFileError(f"{where}: no signal for the fixed target {fixed_target!r}; it has {have}")
    if len(signals.vectors) < mode.min_categories:
        raise SignalFileError(
            f"{where}: the {mode.name} {mode.role} needs signals for at least {mode.min_categories} categories"
        )


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


def check_run_inputs(cfg: RunConfig, model, features: str | Path, binning) -> None:
    """The feature file and the signal file against the model, the binning and the evaluated split."""
    from steering.data import FeatureFile, split_indices
    from steering.signals import load_signals

    data, signals_path, category = cfg.data, cfg.signals.path, cfg.category

    def indices(option: str, split: str, n: int) -> np.ndarray:
        try:
            return split_indices(n, split, data.split, data.train_fraction)
        except ValueError as exc:
            raise ConfigError(option, str(exc)) from None

    from steering.engine.categories import category_mode

    target = category.target
    fixed = binning.canonical(str(target)) if "target" in category_mode(category.name).needs and target else None
    with FeatureFile(features) as ff:
        n = len(ff)
        eval_idx = indices("data.eval_split", data.eval_split, n)
        check_eval_count(len(eval_idx), data.eval_split)
        check_batch_memory(ff, model, int(cfg.batch_size))
        used = [eval_idx]
        if not signals_path:
            used.append(indices("signals.split", cfg.signals.split, n))
        check_features(ff, model.config.mel_bins, np.unique(np.concatenate(used)), what="used")
        if not signals_path:
            check_signal_counts(ff, used[1], binning, binning.min_samples, category.name, fixed)
    if signals_path:
        check_signals(load_signals(signals_path, binning), model.config.source_dim, category.name, fixed)


def check_signal_counts(
    ff,
    indices: np.ndarray,
    binning: Binning,
    min_samples: int,
    category: str = "oracle",
    fixed_target: str | None = None,
    option: str = "binning.min_samples",
    split_option: str = "signals.split",
) -> None:
    """Enough clips per category in the signal split for the category mode, from the ratings alone.

    Checked before any signal is extracted (a forward pass over the split), so a ``min_samples``
    no category reaches fails in one line at once instead of after the extraction.
    """
    from steering.engine.categories import category_mode

    mode = category_mode(category)
    idx = np.unique(np.asarray(indices, dtype=np.int64))
    if idx.size == 0:
        raise ConfigError(split_option, f"{ff.path}: the signal split holds no clips")
    labels = binning.categorize(ff.valence[idx], ff.arousal[idx])
    names, sizes = np.unique(labels, return_counts=True)
    counts = dict(zip(names.tolist(), sizes.tolist(), strict=True))
    kept = [c for c in binning.categories if counts.get(c, 0) >= min_samples]
    needed = max(1, mode.min_categories)
    if len(kept) < needed:
        raise ConfigError(
            option,
            f"{min_samples}: {len(kept)} categories of binning {binning.name!r} have {min_samples} or more of the "
            f"{idx.size} signal-split clips of {ff.path} (the largest has {max(counts.values())}); the "
            f"{mode.name} {mode.role} needs signals for {needed}",
        )
    if fixed_target and counts.get(fixed_target, 0) < min_samples:
        raise ConfigError(
            "category.target",
            f"{fixed_target!r} has {counts.get(fixed_target, 0)} of the {idx.size} signal-split clips of {ff.path}, "
            f"fewer than {option}={min_samples}: it gets no signal",
        )


def prediction_columns(predictions) -> list[str]:
    """Columns of predictions.csv that hold model outputs."""
    return [c for c in predictions.columns if c.startswith(("base_", "steered_"))]


def check_output_path(cfg: Any, option: str = "output") -> Path:
    """An output file path that is not a directory and whose folder can be created."""
    value = _option(cfg, option)
    if not value:
        raise ConfigError(option, "is not set")
    path = Path(str(value)).expanduser()
    if path.is_dir():
        raise ConfigError(option, f"{path} is a directory; give a file path")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK)):
        raise ConfigError(option, f"cannot write into {existing}")
    return path


def check_signals_options(cfg: Any) -> None:
    """``conf/signals.yaml``: the device, the output file and the given input files."""
    check_device(_option(cfg, "device", "auto"))
    check_output_path(cfg)
    check_input_paths(cfg)


def check_train_options(cfg: Any) -> None:
    """``conf/train.yaml``: device, finite loss weights, how the settings fit together, output and input files."""
    from steering.config.schema import TrainConf
    from steering.training.loop import check_settings

    check_device(_option(cfg, "train.device", "auto"), "train.device")
    for key in ("pass_weights", "target_weights"):
        weights = list(_option(cfg, f"train.{key}", []))
        if not all(_finite(w) for w in weights):
            raise ConfigError(f"train.{key}", f"must hold finite numbers, got {weights!r}")
    check_input_paths(cfg)
    check_output_path(cfg, "checkpoint")
    try:
        train = _option(cfg, "train", None)
        check_settings(train if isinstance(train, TrainConf) else TrainConf(**dict(train or {})))
    except (TypeError, ValueError) as exc:
        raise ConfigError("train", str(exc)) from None


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_train_features(cfg: Any, features: str | Path, mel_bins: int) -> None:
    """A feature file the model can train on: width, frames, finite values in train and val, enough clips."""
    from steering.data import FeatureFile, FeatureFileError, split_indices

    with FeatureFile(features) as ff:
        scheme, fraction = _option(cfg, "train.split", "threeway"), _option(cfg, "train.train_fraction", 0.7)
        train = split_indices(len(ff), "train", scheme, fraction)
        val = split_indices(len(ff), "val", scheme, fraction)
        if len(train) == 0 or len(val) < 2:
            raise FeatureFileError(f"{ff.path}: {len(ff)} clips are too few for a train/val split")
        check_features(ff, mel_bins, np.concatenate([train, val]), what="train/val")

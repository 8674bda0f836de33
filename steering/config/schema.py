"""The config dataclasses: one per concept, the objects every app parses its config into.

The YAML files in ``conf/`` stay the user-facing defaults; these dataclasses say what each key is
and are what the library takes (``steering.train`` trains from a :class:`TrainConf`, the model is
built from an :class:`ArchConf`, the front end runs from a :class:`FrontendConf`). They are plain
Python, free of OmegaConf and torch: Hydra serves them through ``steering.config.hydra``, which
turns the checks declared with :func:`integer`, :func:`number` and :func:`choice` into validating
nodes, so a bad value on the command line stops at composition with Hydra's message naming the
key; built by hand, a :class:`Checked` dataclass applies the same checks. The group sections hold
exactly the keys their YAML files set (plus keys that code reads with a default).

The choice lists come from ``steering.vocab``, which imports nothing, so composing a config loads
neither torch nor MLflow. Methods and category modes are not listed here: their ``conf/`` group
files are the user-facing list (Hydra refuses an unknown option), and a ``method.name=`` or
``category.name=`` override is checked against the engine's registries before any work
(``steering.assets.validation.check_run_options``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steering.config.fields import MISSING, Checked, choice, integer, number
from steering.vocab import (
    CATEGORY_SOURCES,
    LAYER_CHOICES,
    PATHWAY_CHOICES,
    PRECISIONS,
    SIGNAL_LABELS,
    SIGNAL_METHODS,
    SPLIT_SCHEMES,
    SPLITS,
)

RESAMPLERS = ("auto", "soxr_hq", "poly")


# --------------------------------------------------------------------------- groups shared by the apps
@dataclass
class ArchConf(Checked):
    """``model.arch``: channel widths of the four conv blocks, head sizes, feedback connections."""

    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    embedding_size: int = integer(512, ge=1)
    head_hidden: int = integer(256, ge=1)
    source_dim: int = integer(128, ge=1)
    mel_bins: int = integer(64, ge=1)
    # [pathway, layer] pairs, e.g. [valence, conv4].
    connections: list[list[str]] = field(
        default_factory=lambda: [["valence", "conv4"], ["valence", "conv3"], ["arousal", "conv2"], ["arousal", "conv1"]]
    )
    # Registered backbone class (steering/model/backbone.py); docs/extending.md adds one.
    backbone: str = "cnn6"


@dataclass
class ModelConf(Checked):
    """``model`` group: a checkpoint (null: the embedded demo) and the architecture the demo builds."""

    name: str = MISSING
    checkpoint: str | None = None
    arch: ArchConf = field(default_factory=ArchConf)
    # Allow full unpickling of a checkpoint you trust (older files that weights-only loading refuses).
    trust_pickle: bool = False


@dataclass
class DataConf(Checked):
    """``data`` group: the feature file and how it is split."""

    path: str | None = None
    split: str = choice("threeway", SPLIT_SCHEMES)
    train_fraction: float = number(0.7, gt=0.0, lt=1.0)
    eval_split: str = choice("test", SPLITS)


@dataclass
class AxisConf(Checked):
    """One axis of a binning: increasing thresholds and one more name than thresholds."""

    thresholds: list[float] = MISSING
    names: list[str] = MISSING


@dataclass
class BinningConf(Checked):
    """``binning`` group (``conf/binning/*.yaml``, or your own file of this shape)."""

    name: str = MISSING
    min_samples: int = integer(15, ge=1)
    valence: AxisConf = MISSING
    arousal: AxisConf = MISSING
    # Alternative spellings of bin names in older signal files, e.g. {middle: moderate}.
    aliases: dict[str, str] = field(default_factory=dict)


@dataclass
class PathwayConf(Checked):
    name: str = choice(MISSING, PATHWAY_CHOICES)


@dataclass
class LayerConf(Checked):
    name: str = choice(MISSING, LAYER_CHOICES)


@dataclass
class MethodConf(Checked):
    # One of conf/method/*.yaml (the registry of steering.engine.methods).
    name: str = MISSING


@dataclass
class CategoryConf(Checked):
    """``category`` group: which signal each sample gets."""

    # One of conf/category/*.yaml (the registry of steering.engine.categories).
    name: str = MISSING
    # category=fixed: the category every sample is steered toward.
    target: str | None = None
    # Predicted categories from the model's final prediction (final) or its pass-1 prediction (pass1).
    source: str = choice("final", CATEGORY_SOURCES)
    # category=random / shuffled: draws per run (the run reports their mean and spread).
    draws: int = integer(20, ge=1)


@dataclass
class TrackingConf(Checked):
    """``tracking`` group: the MLflow store and experiment."""

    uri: str = MISSING
    experiment: str = "steering"
    # steering.train logs to this experiment (null: "<experiment>-train").
    train_experiment: str | None = None
    # tracking=offline: each job logs to its own SQLite store (``uri``, in its output directory), artifacts
    # beside it; a sweep opens no parent run or server there; steering-merge joins the stores later (docs/hpc.md).
    offline: bool = False


@dataclass
class SyntheticConf(Checked):
    """Synthetic soundscapes (docs/synthetic.md): how many clips, how long, how noisy the raters are."""

    n_clips: int = integer(1213, ge=1)
    duration: float = number(6.0, gt=0.0)
    seed: int = integer(0, ge=0)  # numpy's generators take no negative seed
    rater_noise: float = number(0.1, ge=0.0)  # sd of the rating noise around the latent (valence, arousal)
    parameter_jitter: float = number(0.15, ge=0.0)  # sd of per-parameter noise, in units of the [0, 1] range
    # Clip names are <name_prefix>_<index>.wav. The sample rate is the front end's.
    name_prefix: str = "synth"


@dataclass
class FrontendConf(Checked):
    """Log-mel front end: the parameters the users' feature file was made with (``frontend``, ``demo.frontend``)."""

    sample_rate: int = integer(32000, ge=1)
    n_fft: int = integer(1024, ge=1)
    hop_length: int = integer(320, ge=1)
    mel_bins: int = integer(64, ge=1)
    fmin: float = number(50.0, ge=0.0)
    fmax: float = number(14000.0, gt=0.0)
    top_db: float = number(80.0, gt=0.0)
    frames: int = integer(1000, ge=1)
    pad_with_floor: bool = True  # False reproduces the old 0-dB padding
    # auto: soxr (very high quality, what librosa.load uses) when installed, else scipy's resample_poly.
    resampler: str = choice("auto", RESAMPLERS)


@dataclass
class TrainConf(Checked):
    """How a model is trained (``train`` of ``steering.train``, ``demo.train``); ``pass_weights``: one per pass."""

    epochs: int = integer(30, ge=1)
    batch_size: int = integer(32, ge=1)
    lr: float = number(0.001, gt=0.0)
    weight_decay: float = number(0.0, ge=0.0)
    forward_passes: int = integer(2, ge=2)
    pass_weights: list[float] = field(default_factory=lambda: [0.5, 1.0])
    target_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # valence, arousal
    split: str = choice("threeway", SPLIT_SCHEMES)
    train_fraction: float = number(0.7, gt=0.0, lt=1.0)
    cosine_schedule: bool = True
    seed: int = integer(0, ge=0)
    device: str = "auto"
    eval_batch_size: int = integer(128, ge=1)
    progress: bool = True
    # Torch CPU threads: null keeps torch's default; "auto" drops to 1 when other work already loads
    # the cores (oversubscribed OpenMP threads slow training down several-fold); or a number.
    num_threads: Any | None = None


@dataclass
class DemoConf(Checked):
    """``demo`` group: the embedded demo, built on first use and cached."""

    cache_dir: str = MISSING
    workers: int = integer(0, ge=0)
    progress: bool = True
    # The defaults are conf/demo/default.yaml's: short clips, a front end cut to their length, and a
    # short training on the CPU with one thread (the same model, bit for bit, on every build).
    synthetic: SyntheticConf = field(default_factory=lambda: SyntheticConf(duration=1.6))
    frontend: FrontendConf = field(default_factory=lambda: FrontendConf(frames=160))
    train: TrainConf = field(default_factory=lambda: TrainConf(epochs=5, lr=0.002, device="cpu", num_threads=1))


# --------------------------------------------------------------------------- steering.run
@dataclass
class OptimizeConf(Checked):
    """``signals.optimize``: gradient descent of ``signals.method=optimized`` (docs/signals.md)."""

    # Most steps per step size; the best step on the held-out clips is kept (early stopping).
    steps: int = integer(200, ge=1)
    # Candidate step sizes (Adam); the one with the lowest held-out loss wins.
    step_sizes: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1])
    # Stop after this many steps without a better held-out loss.
    patience: int = integer(20, ge=1)
    # Share of the signal split's clips held out for early stopping and the step size (never fitted on).
    holdout: float = number(0.2, gt=0.0, lt=1.0)


@dataclass
class SignalsConf(Checked):
    """``signals``: a signal file, or the split they are made from and how (docs/signals.md)."""

    path: str | None = None
    split: str = choice("train", SPLITS)
    # mean: category means; knn: each clip's k nearest training clips; optimized: fitted vectors.
    method: str = choice("mean", SIGNAL_METHODS)
    # signals.method=knn: neighbours per clip (more than the split has: all of them, the grand mean).
    k: int = integer(10, ge=1)
    # observed: the clips' own ratings; permuted: ratings permuted among the clips; none: one vector for all.
    labels: str = choice("observed", SIGNAL_LABELS)
    optimize: OptimizeConf = field(default_factory=OptimizeConf)


@dataclass
class MetricsConf(Checked):
    bootstrap_resamples: int = integer(2000, ge=1)
    confidence: float = number(0.95, gt=0.0, lt=1.0)
    seed: int = integer(0, ge=0)


@dataclass
class CacheConf(Checked):
    dir: str = MISSING


@dataclass
class RunConfig(Checked):
    """``steering.run`` (conf/run.yaml): one steering configuration."""

    model: ModelConf = field(default_factory=ModelConf)
    data: DataConf = field(default_factory=DataConf)
    binning: BinningConf = field(default_factory=BinningConf)
    pathway: PathwayConf = field(default_factory=PathwayConf)
    layer: LayerConf = field(default_factory=LayerConf)
    method: MethodConf = field(default_factory=MethodConf)
    category: CategoryConf = field(default_factory=CategoryConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    demo: DemoConf = field(default_factory=DemoConf)
    # Select on val, confirm on test: {enabled, criterion, split} or the shorthand confirm=true/false,
    # so a plain node; steering.sweep.confirmation.confirm_settings checks it.
    confirm: Any = None
    strength: float = number(1.0)
    # The blend alpha * signal + (1 - alpha) * own activation: a weight in [0, 1].
    alpha: float = number(1.0, ge=0.0, le=1.0)
    priming: bool = False
    forward_passes: int = integer(2, ge=2)
    device: str = "auto"
    precision: str = choice("auto", PRECISIONS)
    precision_tolerance: float = number(1.0e-3, gt=0.0)
    threads: int | None = integer(None, ge=1)
    batch_size: int = integer(16, ge=1)
    seed: int = integer(0, ge=0)
    resume: bool = False
    signals: SignalsConf = field(default_factory=SignalsConf)
    metrics: MetricsConf = field(default_factory=MetricsConf)
    cache: CacheConf = field(default_factory=CacheConf)


# --------------------------------------------------------------------------- steering.signals
@dataclass
class SignalsAppConfig(Checked):
    """``steering.signals`` (conf/signals.yaml): extract signals to a JSON file."""

    model: ModelConf = field(default_factory=ModelConf)
    data: DataConf = field(default_factory=DataConf)
    binning: BinningConf = field(default_factory=BinningConf)
    demo: DemoConf = field(default_factory=DemoConf)
    split: str = choice("train", SPLITS)
    output: str = MISSING
    min_samples: int | None = integer(None, ge=1)
    batch_size: int = integer(64, ge=1)
    device: str = "auto"


# --------------------------------------------------------------------------- steering.train
@dataclass
class TrainAppConfig(Checked):
    """``steering.train`` (conf/train.yaml): train a model, curves to MLflow."""

    model: ModelConf = field(default_factory=ModelConf)
    data: DataConf = field(default_factory=DataConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    demo: DemoConf = field(default_factory=DemoConf)
    checkpoint: str = MISSING
    run_name: str | None = None
    log_checkpoint: bool = False
    train: TrainConf = field(default_factory=TrainConf)


# --------------------------------------------------------------------------- steering.prepare
@dataclass
class FolderSourceConf(Checked):
    """``source=folder``: audio files with Emo-Soundscapes-style rating CSVs."""

    name: str = "folder"
    audio_dir: str | None = None
    valence_csv: str | None = None
    arousal_csv: str | None = None
    extensions: list[str] = field(default_factory=lambda: ["wav", "flac", "ogg"])
    strict: bool = False


@dataclass
class SyntheticSourceConf(SyntheticConf):
    """``source=synthetic``: the synthetic soundscapes, generated in memory."""

    name: str = "synthetic"
    workers: int = integer(0, ge=0)


@dataclass
class PrepareConfig(Checked):
    """``steering.prepare`` (conf/prepare.yaml): audio and ratings to a feature file."""

    # Typed by the option's own schema (conf/source/*.yaml extends schema/source/<option>).
    source: Any = MISSING
    output: str = MISSING
    frontend: FrontendConf = field(default_factory=FrontendConf)


# --------------------------------------------------------------------------- steering.report
@dataclass
class ReportConfig(Checked):
    """``steering.report`` (conf/report.yaml): a sweep's table and figures rebuilt from MLflow."""

    tracking: TrackingConf = field(default_factory=TrackingConf)
    sweep: str | None = None
    preset: str | None = None
    mlflow_experiment: str | None = None
    compare: list[str] | None = None
    out: str = MISSING
    log_to_parent: bool = False

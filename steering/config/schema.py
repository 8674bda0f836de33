"""Structured-config schemas of every app and config group (Hydra's ConfigStore; see ``store.py``).

The YAML files in ``conf/`` stay the user-facing defaults; these dataclasses say what each key is.
Types are checked by OmegaConf, ranges and choices by the value nodes of ``nodes.py``, both while
Hydra composes the config: a bad value on the command line stops before any work, with Hydra's
message naming the key. The group sections hold exactly the keys their YAML files set (plus keys
that code reads with a default), so the demo's cache key and a run's config hash see the same
values a YAML-only config gave.

The choice lists come from ``steering.vocab``, which imports nothing, so composing a config loads
neither torch nor MLflow. Methods and category modes are not listed here: their ``conf/`` group
files are the user-facing list (Hydra refuses an unknown option), and a ``method.name=`` or
``category.name=`` override is checked against the engine's registries before any work
(``steering.assets.validation.check_run_options``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from steering.config.nodes import choice, integer, number
from steering.vocab import CATEGORY_SOURCES, LAYER_CHOICES, PATHWAY_CHOICES, PRECISIONS, SPLIT_SCHEMES, SPLITS

RESAMPLERS = ("auto", "soxr_hq", "poly")


# --------------------------------------------------------------------------- groups shared by the apps
@dataclass
class ArchConf:
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
    # Registered backbone class (steering/model/backbone.py); docs/extending-backbone.md adds one.
    backbone: str = "cnn6"


@dataclass
class ModelConf:
    """``model`` group: a checkpoint (null: the embedded demo) and the architecture the demo builds."""

    name: str = MISSING
    checkpoint: str | None = None
    arch: ArchConf = field(default_factory=ArchConf)
    # Allow full unpickling of a checkpoint you trust (older files that weights-only loading refuses).
    trust_pickle: bool = False


@dataclass
class DataConf:
    """``data`` group: the feature file and how it is split."""

    path: str | None = None
    split: str = choice("threeway", SPLIT_SCHEMES)
    train_fraction: float = number(0.7, gt=0.0, lt=1.0)
    eval_split: str = choice("test", SPLITS)


@dataclass
class AxisConf:
    """One axis of a binning: increasing thresholds and one more name than thresholds."""

    thresholds: list[float] = MISSING
    names: list[str] = MISSING


@dataclass
class BinningConf:
    """``binning`` group (``conf/binning/*.yaml``, or your own file of this shape)."""

    name: str = MISSING
    min_samples: int = integer(15, ge=1)
    valence: AxisConf = MISSING
    arousal: AxisConf = MISSING
    # Alternative spellings of bin names in older signal files, e.g. {middle: moderate}.
    aliases: dict[str, str] = field(default_factory=dict)


@dataclass
class PathwayConf:
    name: str = choice(MISSING, PATHWAY_CHOICES)


@dataclass
class LayerConf:
    name: str = choice(MISSING, LAYER_CHOICES)


@dataclass
class MethodConf:
    # One of conf/method/*.yaml (the registry of steering.engine.methods).
    name: str = MISSING


@dataclass
class CategoryConf:
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
class TrackingConf:
    """``tracking`` group: the MLflow store and experiment."""

    uri: str = MISSING
    experiment: str = "steering"
    # steering.train logs to this experiment (null: "<experiment>-train").
    train_experiment: str | None = None


@dataclass
class SyntheticConf:
    """The synthetic soundscapes of the demo (``demo.synthetic``)."""

    n_clips: int = integer(1213, ge=1)
    duration: float = number(6.0, gt=0.0)
    seed: int = 0
    rater_noise: float = number(0.1, ge=0.0)
    parameter_jitter: float = number(0.15, ge=0.0)


@dataclass
class FrontendConf:
    """Log-mel front end (``demo.frontend``)."""

    sample_rate: int = integer(32000, ge=1)
    n_fft: int = integer(1024, ge=1)
    hop_length: int = integer(320, ge=1)
    mel_bins: int = integer(64, ge=1)
    fmin: float = number(50.0, ge=0.0)
    fmax: float = number(14000.0, gt=0.0)
    top_db: float = number(80.0, gt=0.0)
    frames: int = integer(1000, ge=1)
    pad_with_floor: bool = True


@dataclass
class PrepareFrontendConf(FrontendConf):
    """The front end of ``steering.prepare``, which also picks a resampler."""

    resampler: str = choice("auto", RESAMPLERS)


@dataclass
class DemoTrainConf:
    """How the demo model is trained (``demo.train``)."""

    epochs: int = integer(5, ge=1)
    batch_size: int = integer(32, ge=1)
    lr: float = number(0.002, gt=0.0)
    forward_passes: int = integer(2, ge=2)
    pass_weights: list[float] = field(default_factory=lambda: [0.5, 1.0])
    split: str = choice("threeway", SPLIT_SCHEMES)
    seed: int = 0
    # null: torch's default; auto: 1 thread when other work already loads the CPU; or a number.
    num_threads: Any | None = None


@dataclass
class DemoConf:
    """``demo`` group: the embedded demo, built on first use and cached."""

    cache_dir: str = MISSING
    workers: int = integer(0, ge=0)
    progress: bool = True
    synthetic: SyntheticConf = field(default_factory=SyntheticConf)
    frontend: FrontendConf = field(default_factory=FrontendConf)
    train: DemoTrainConf = field(default_factory=DemoTrainConf)


# --------------------------------------------------------------------------- steering.run
@dataclass
class SignalsConf:
    """``signals``: a signal file, or the split they are extracted from."""

    path: str | None = None
    split: str = choice("train", SPLITS)


@dataclass
class MetricsConf:
    bootstrap_resamples: int = integer(2000, ge=1)
    confidence: float = number(0.95, gt=0.0, lt=1.0)
    seed: int = 0


@dataclass
class CacheConf:
    dir: str = MISSING


@dataclass
class RunConfig:
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
    alpha: float = number(1.0)
    priming: bool = False
    forward_passes: int = integer(2, ge=2)
    device: str = "auto"
    precision: str = choice("auto", PRECISIONS)
    precision_tolerance: float = number(1.0e-3, gt=0.0)
    threads: int | None = integer(None, ge=1)
    batch_size: int = integer(16, ge=1)
    seed: int = 0
    resume: bool = False
    signals: SignalsConf = field(default_factory=SignalsConf)
    metrics: MetricsConf = field(default_factory=MetricsConf)
    cache: CacheConf = field(default_factory=CacheConf)


# --------------------------------------------------------------------------- steering.signals
@dataclass
class SignalsAppConfig:
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
class TrainConf:
    """``train`` section of ``steering.train`` (the fields of ``steering.model.training.TrainConfig``)."""

    epochs: int = integer(30, ge=1)
    batch_size: int = integer(32, ge=1)
    lr: float = number(0.001, gt=0.0)
    weight_decay: float = number(0.0, ge=0.0)
    forward_passes: int = integer(2, ge=2)
    pass_weights: list[float] = field(default_factory=lambda: [0.5, 1.0])
    target_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    split: str = choice("threeway", SPLIT_SCHEMES)
    train_fraction: float = number(0.7, gt=0.0, lt=1.0)
    cosine_schedule: bool = True
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = integer(128, ge=1)
    progress: bool = True
    # null: torch's default; auto: 1 thread when other work already loads the CPU; or a number.
    num_threads: Any | None = None


@dataclass
class TrainAppConfig:
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
class FolderSourceConf:
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
    name_prefix: str = "synth"
    workers: int = integer(0, ge=0)


@dataclass
class PrepareConfig:
    """``steering.prepare`` (conf/prepare.yaml): audio and ratings to a feature file."""

    # Typed by the option's own schema (conf/source/*.yaml extends schema/source/<option>).
    source: Any = MISSING
    output: str = MISSING
    frontend: PrepareFrontendConf = field(default_factory=PrepareFrontendConf)


# --------------------------------------------------------------------------- steering.report
@dataclass
class ReportConfig:
    """``steering.report`` (conf/report.yaml): a sweep's table and figures rebuilt from MLflow."""

    tracking: TrackingConf = field(default_factory=TrackingConf)
    sweep: str | None = None
    preset: str | None = None
    mlflow_experiment: str | None = None
    compare: list[str] | None = None
    out: str = MISSING
    log_to_parent: bool = False

"""Reading and writing checkpoints in the reference layout (docs/formats.md, "Checkpoints")."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from steering.errors import SteeringError
from steering.model.backbone import DEFAULT_BACKBONE, backbone_class
from steering.model.lrm import LAYERS, Connection
from steering.model.network import LRMEmotionNet, ModelConfig
from steering.model.safe_load import TorchFileError, safe_torch_load
from steering.util.files import atomic_path

log = logging.getLogger(__name__)

BACKBONE_PREFIX = "visual_system.base."
#: Present in every reference checkpoint, unused when the input is already log-mel features.
UNUSED_PREFIXES = (
    BACKBONE_PREFIX + "spectrogram_extractor.",
    BACKBONE_PREFIX + "logmel_extractor.",
    BACKBONE_PREFIX + "fc_audioset.",
)
AUDIOSET_CLASSES = 527
_FLAT_LRM = re.compile(r"^lrm\.(from_(affective_\w+?_128d)_to_(visual_system_base_conv_block\d))\.(.+)$")
_NESTED_LRM = re.compile(r"^lrm\.(visual_system_base_conv_block(\d))_modulation\.from_affective_(\w+?)_128d_to_")


class CheckpointError(SteeringError, ValueError):
    """A checkpoint file that does not match the model it describes."""


def _read(path: Path, map_location: str | torch.device, trust_pickle: bool = False) -> Any:
    """The file's object, loaded without running code (see :mod:`steering.model.safe_load`)."""
    try:
        return safe_torch_load(path, map_location, trust_pickle=trust_pickle)
    except TorchFileError as exc:
        raise CheckpointError(str(exc)) from None


def extract_state_dict(obj: Any, path: Path | str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The state_dict of a checkpoint object: ``obj["model"]`` or ``obj`` itself."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a state_dict or a dict with a 'model' state_dict")
    non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(f"{path}: state_dict entries that are not tensors: {non_tensors[:10]}")
    return dict(obj)


def normalize_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the older flat LRM layout (``lrm.from_S_to_T.*``) to the nested one."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _FLAT_LRM.match(key)
        if match:
            block, _source, target, rest = match.groups()
            key = f"lrm.{target}_modulation.{block}.{rest}"
        out[key] = value
    return out


def drop_unused(state: Mapping[str, torch.Tensor], path: Path | str) -> dict[str, torch.Tensor]:
    """Remove the extractor and AudioSet-classifier keys, with one log line."""
    kept = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    dropped = len(state) - len(kept)
    if dropped:
        log.info("%s: ignoring %d unused keys (spectrogram/logmel extractors, fc_audioset)", path, dropped)
    return kept


def infer_config(
    state: Mapping[str, torch.Tensor], path: Path | str = "<checkpoint>", backbone: str = DEFAULT_BACKBONE
) -> ModelConfig:
    """Architecture (channel widths, sizes, connections) from the state_dict's shapes."""
    base = {k.removeprefix(BACKBONE_PREFIX): v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    try:
        sizes = backbone_class(backbone).sizes_from_state(base)
    except KeyError as exc:
        raise CheckpointError(
            f"{path}: missing key {BACKBONE_PREFIX + exc.args[0]!r}; cannot infer the architecture"
        ) from None
    try:
        hidden = int(state["affective_valence.0.weight"].shape[0])
        source_dim = int(state["affective_valence.2.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"{path}: missing key {exc.args[0]!r}; cannot infer the architecture") from None
    connections = set()
    for key in state:
        match = _NESTED_LRM.match(key)
        if match:
            connections.add(Connection(match.group(3), LAYERS[int(match.group(2)) - 1]))
    ordered = tuple(sorted(connections, key=lambda c: (-c.block_index, c.pathway)))
    return ModelConfig(
        sizes["channels"], sizes["embedding_size"], hidden, source_dim, sizes["mel_bins"], ordered, backbone
    )


def backbone_name(obj: Any) -> str:
    """The backbone a checkpoint object names (``model_config.backbone``); files without one are Cnn6."""
    meta = obj.get("model_config") if isinstance(obj, Mapping) else None
    name = meta.get("backbone") if isinstance(meta, Mapping) else None
    return str(name) if name else DEFAULT_BACKBONE


def load_state_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Strict load with an error that lists missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if mis_shaped:
        problems.append(f"shape mismatches: {mis_shaped}")
    if problems:
        raise CheckpointError(f"{path} does not match the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _read_checkpoint(path: str | Path, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict in the nested layout, unused keys dropped (CPU tensors), and the backbone's name."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    obj = _read(path, "cpu", trust_pickle)
    return drop_unused(normalize_layout(extract_state_dict(obj, path)), path), backbone_name(obj)


def read_state(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The checkpoint's state_dict in the nested layout, unused keys dropped (CPU tensors)."""
    return _read_checkpoint(path, trust_pickle)[0]


def load_model(path: str | Path, device: str | torch.device = "cpu", trust_pickle: bool = False) -> LRMEmotionNet:
    """Load a checkpoint in the reference layout (nested or flat LRM) into a model in eval mode.

    The file is loaded without running code unless ``trust_pickle`` (``model.trust_pickle``).
    """
    path = Path(path)
    state, backbone = _read_checkpoint(path, trust_pickle)
    model = LRMEmotionNet(infer_config(state, path, backbone))
    load_state_into(model, state, path)
    return model.to(device, memory_format=torch.channels_last).eval()


def load_backbone(model: LRMEmotionNet, path: str | Path, trust_pickle: bool = False) -> None:
    """Load PANNs Cnn6 weights (``Cnn6_mAP=0.343.pth`` layout) into ``visual_system.base``.

    The same works for another backbone whose file uses the backbone's own module names.
    """
    path = Path(path)
    state = extract_state_dict(_read(path, "cpu", trust_pickle), path)
    unused = ("spectrogram_extractor.", "logmel_extractor.", "fc_audioset.")
    backbone_state = {k: v for k, v in state.items() if not k.startswith(unused)}
    load_state_into(model.backbone, backbone_state, path)


# --------------------------------------------------------------------------- writing
def _extractor_state(embedding_size: int, n_fft: int = 1024, mel_bins: int = 64) -> dict[str, torch.Tensor]:
    """Keys the reference layout always carries (torchlibrosa STFT/log-mel, AudioSet classifier).

    The STFT kernels are the real/imaginary DFT bases with a periodic Hann window and the mel
    matrix is the Slaney filterbank of the reference front end, so old scripts that build their
    extractor from the file get the front end the features were made with.
    """
    from steering.audio.frontend import mel_filterbank
    from steering.config.schema import FrontendConf

    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * torch.pi * k * n / n_fft
    fe = FrontendConf(n_fft=n_fft, mel_bins=mel_bins)
    return {
        f"{BACKBONE_PREFIX}spectrogram_extractor.stft.conv_real.weight": (torch.cos(angle) * window)[:, None].float(),
        f"{BACKBONE_PREFIX}spectrogram_extractor.stft.conv_imag.weight": (-torch.sin(angle) * window)[:, None].float(),
        f"{BACKBONE_PREFIX}logmel_extractor.melW": torch.as_tensor(mel_filterbank(fe).T, dtype=torch.float32),
        f"{BACKBONE_PREFIX}fc_audioset.weight": torch.zeros(AUDIOSET_CLASSES, embedding_size),
        f"{BACKBONE_PREFIX}fc_audioset.bias": torch.zeros(AUDIOSET_CLASSES),
    }


def reference_state_dict(model: LRMEmotionNet) -> dict[str, torch.Tensor]:
    """The model's state_dict plus the unused reference keys, on CPU."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state.update(_extractor_state(model.config.embedding_size, mel_bins=model.config.mel_bins))
    return state


def save_checkpoint(model: LRMEmotionNet, path: str | Path, **extra: Any) -> Path:
    """Write ``{"model": state_dict, **extra}`` atomically in the reference layout.

    A model on another backbone than Cnn6 also gets ``model_config`` (unless given), which names
    the backbone for :func:`load_model`; Cnn6 files stay exactly as the reference writes them.
    """
    path = Path(path)
    if model.config.backbone != DEFAULT_BACKBONE:
        extra = {"model_config": model.config.to_dict(), **extra}
    with atomic_path(path, same_name=True) as tmp:  # torch.save names its archive after the file
        torch.save({"model": reference_state_dict(model), **extra}, tmp)
    return path

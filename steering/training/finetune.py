"""``steering.train model.checkpoint=FILE``: fine-tune that model instead of training a new one.

The checkpoint is loaded (safely, as every checkpoint: ``model.trust_pickle`` for files that need
full unpickling) before any MLflow run opens; its architecture is the one trained, so
``model.arch`` is not used then. Writing the result over the file being fine-tuned is refused: a
run that stops half-way would otherwise have replaced the user's model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from steering.errors import ConfigError
from steering.model import LRMEmotionNet, load_model

log = logging.getLogger(__name__)


def initial_model(
    checkpoint: str | Path | None, output: str | Path, trust_pickle: bool = False
) -> LRMEmotionNet | None:
    """The model to fine-tune (``model.checkpoint``), or None to train a new one from ``model.arch``."""
    if checkpoint is None:
        return None
    source = Path(checkpoint).expanduser()
    if not source.is_file():
        raise ConfigError("model.checkpoint", f"{source} does not exist (the model to fine-tune)")
    if Path(output).expanduser().resolve() == source.resolve():
        raise ConfigError(
            "checkpoint", f"{output} is model.checkpoint, the model being fine-tuned; write the result to another file"
        )
    model = load_model(source, trust_pickle=trust_pickle)
    log.info("fine-tuning %s (model.arch is not used: the checkpoint's architecture is trained)", source)
    return model

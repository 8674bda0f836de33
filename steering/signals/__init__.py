"""Steering signals: extraction, the users' JSON layout, caching and diagnostics.

Names are imported on first use, so ``python -m steering.signals --help`` does not load torch.
"""

from __future__ import annotations

from steering.util.lazy import lazy_attributes

_WHERE = {
    "cache_key": "steering.signals.cache",
    "cached_signals": "steering.signals.cache",
    "signal_diagnostics": "steering.signals.diagnostics",
    "extract_signals": "steering.signals.extract",
    "pass1_activations": "steering.signals.extract",
    "signals_from_activations": "steering.signals.extract",
    "SignalFileError": "steering.signals.io",
    "load_signals": "steering.signals.io",
    "save_signals": "steering.signals.io",
    "PATHWAYS": "steering.signals.signalset",
    "SIGNAL_DIM": "steering.signals.signalset",
    "SignalSet": "steering.signals.signalset",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_attributes(__name__, _WHERE)

"""Steering signals: extraction, the users' JSON layout, caching and diagnostics."""

from steering.signals.cache import cache_key, cached_signals
from steering.signals.diagnostics import signal_diagnostics
from steering.signals.extract import extract_signals, pass1_activations, signals_from_activations
from steering.signals.io import SignalFileError, load_signals, save_signals
from steering.signals.signalset import PATHWAYS, SIGNAL_DIM, SignalSet

__all__ = [
    "PATHWAYS",
    "SIGNAL_DIM",
    "SignalFileError",
    "SignalSet",
    "cache_key",
    "cached_signals",
    "extract_signals",
    "load_signals",
    "pass1_activations",
    "save_signals",
    "signal_diagnostics",
    "signals_from_activations",
]

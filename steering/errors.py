"""Errors the user can fix: each names the option or the file, and prints as one line.

Every known error derives from :class:`SteeringError`; the apps' wrapper (``steering.cli``) prints
it as ``error: <what>: <problem>`` and exits with status 2, so a new error class of the library
only has to derive from it. Torch-free and free of imports, so every layer may raise these.
"""

from __future__ import annotations


class SteeringError(Exception):
    """Base of the errors that describe the user's input, config or environment (not a bug)."""


class ConfigError(SteeringError, ValueError):
    """An option with a value that cannot work; the message starts with the option's name."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option


class TrackingError(SteeringError, RuntimeError):
    """The MLflow store or server cannot be used; the message names the URI."""


class ResultError(SteeringError, RuntimeError):
    """A run whose predictions or metrics came out non-finite (the run fails instead of finishing)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so the same clean-up runs."""


def one_line(exc: BaseException) -> str:
    """``error: <what>: <problem>`` in one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"error: {text}"

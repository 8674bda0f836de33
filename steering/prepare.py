"""``python -m steering.prepare``: audio and ratings -> feature file (docs/formats.md).

``python -m steering.prepare source.audio_dir=DIR output=features.h5`` reads a folder of audio
(nested folders; wav/flac/ogg) with ``Valence.csv`` and ``Arousal.csv`` (no header: file name,
rating), the Emo-Soundscapes layout. ``python -m steering.prepare source=synthetic`` generates the
synthetic affective soundscapes instead; both go through the same front end.
"""

from __future__ import annotations

from pathlib import Path

from steering.cli import hydra_app, run_app
from steering.config.schema import FolderSourceConf, PrepareConfig, SyntheticSourceConf

# The torch front end and the feature-file writer load inside run(), so the app composes its
# config and answers --help without torch.


def run(config: PrepareConfig) -> Path:
    """Dispatch on the source (folder or synthetic); the output path is checked before work."""
    from steering.assets.validation import check_output_path
    from steering.audio.folder import PrepareError, prepare_folder
    from steering.audio.render import prepare_synthetic

    check_output_path({"output": config.output})
    source, output = config.source, Path(config.output)
    if isinstance(source, FolderSourceConf):
        if not source.audio_dir:
            raise PrepareError("source.audio_dir is not set: pass source.audio_dir=/path/to/audio")
        path, _ = prepare_folder(
            source.audio_dir,
            output,
            config.frontend,
            valence_csv=source.valence_csv,
            arousal_csv=source.arousal_csv,
            extensions=tuple(source.extensions),
            strict=source.strict,
        )
        return path
    if isinstance(source, SyntheticSourceConf):
        return prepare_synthetic(output, source, config.frontend, source.workers)
    raise PrepareError(f"unknown source {getattr(source, 'name', source)!r}; expected 'folder' or 'synthetic'")


@hydra_app("prepare")
def main(config: PrepareConfig) -> None:
    run(config)


def cli() -> None:
    """Console-script entry point: one-line errors (exit 2), SIGTERM handled like Ctrl-C."""
    run_app(main)


if __name__ == "__main__":
    cli()

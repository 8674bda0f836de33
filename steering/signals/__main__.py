"""``python -m steering.signals``: the app lives in ``steering.signals_app``."""

from steering.signals_app import cli

if __name__ == "__main__":
    cli()

"""tunescout: music recognition. `tunescout.engine` is the pure-logic pipeline; `tunescout.store` keeps it."""

__version__ = "0.1.0"

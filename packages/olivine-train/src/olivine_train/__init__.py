"""olivine_train."""

from olivine_train._version import __version__

__all__ = ["__version__"]

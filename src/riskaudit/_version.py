"""The release: the crate's version (native/Cargo.toml), which maturin also gives the wheel."""

from riskaudit._native import __version__

__all__ = ["__version__"]

"""The public surface: what ``riskaudit`` and each of its packages export."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import pytest

import riskaudit
from riskaudit import errors

PACKAGES = sorted(m.name for m in pkgutil.iter_modules(riskaudit.__path__, "riskaudit.") if m.ispkg)


def test_the_package_exports_exactly_its_all() -> None:
    """Every public name of ``riskaudit`` is in ``__all__``, and nothing else is."""
    public = {
        name
        for name in vars(riskaudit)
        if not name.startswith("_") and not inspect.ismodule(getattr(riskaudit, name))
    }
    assert public == set(riskaudit.__all__) - {"__version__"}
    assert riskaudit.__all__ == sorted(riskaudit.__all__)


def test_every_public_error_is_exported() -> None:
    """Each AuditError subclass the errors module defines can be caught by its
    top-level name: ``from riskaudit import AuditBackupError``."""
    family = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, riskaudit.AuditError)
    }
    assert family <= set(riskaudit.__all__), family - set(riskaudit.__all__)
    assert all(getattr(riskaudit, n) is getattr(errors, n) for n in family)


@pytest.mark.parametrize("name", PACKAGES)
def test_each_package_exports_exactly_its_all(name: str) -> None:
    """A package's ``__all__`` is exactly the public names its ``__init__`` holds (its
    face; ruff keeps it sorted): nothing listed is missing, nothing public is unlisted."""
    module = importlib.import_module(name)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and not inspect.ismodule(v)
        and n != "annotations"  # from __future__
        and v is not getattr(typing, n, None)  # a type hint's helper
    }
    assert public == set(module.__all__)

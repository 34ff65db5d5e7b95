"""Modules of the optional extras, imported with one line saying which extra to install when they are missing."""
from __future__ import annotations

import importlib
from types import ModuleType

from reisoseg.errors import ReIsoSegError


def extra_module(name: str, extra: str, what: str) -> ModuleType:
    """`name` (a module of reisoseg that needs the extra `extra`), or one line saying that `what` needs it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ReIsoSegError(f"{what} needs the {extra} extra ({error.name} is missing): "
                            f"pip install 'reisoseg[{extra}]'") from error

"""Tests of the benchmark scripts' bookkeeping (the scripts live in benchmarks/, outside the package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import benchmarks/NAME.py (registered under NAME: its dataclasses look their module up)."""
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their neighbours
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

"""Learning strategies as plugins: one file each, found here by itself.

A strategy file registers its name, its factory and the model of its own settings
(``register`` or, for an Avalanche strategy, ``register_avalanche``); importing this package
imports every such file (they are light: Avalanche loads only when one is built), so a new
strategy is one new file: ``STREAMCL_STRATEGY`` accepts it, ``LearnerSettings`` gains its
settings and the contract suite (tests/unit/test_strategies.py) checks it.
"""

from importlib import import_module
from pkgutil import iter_modules

from learners.strategies._avalanche_registry import register_avalanche
from learners.strategies._registry import (
    StrategySpec,
    build_learner,
    fine_tune_args,
    get,
    names,
    register,
    settings_models,
    unregister,
)

for _module in iter_modules(__path__):
    if not _module.name.startswith("_"):
        import_module(f"{__name__}.{_module.name}")

__all__ = [
    "StrategySpec",
    "build_learner",
    "fine_tune_args",
    "get",
    "names",
    "register",
    "register_avalanche",
    "settings_models",
    "unregister",
]

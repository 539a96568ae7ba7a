"""The chaos suite's parts: ``streamcl up`` under a harness, a constant load with feedback,
fault injectors, and the auditor of accepted feedback against the surviving lineage.

``bench/chaos.py`` runs one scenario per fresh state dir; ``tests/e2e/test_chaos.py`` runs a
few faults in sequence in one platform.
"""

from chaoslib.audit import Audit, audit
from chaoslib.harness import Harness, HarnessConfig
from chaoslib.load import LoadGen, LoadStats
from chaoslib.session import Fault, SessionReport, run_session

__all__ = [
    "Audit",
    "Fault",
    "Harness",
    "HarnessConfig",
    "LoadGen",
    "LoadStats",
    "SessionReport",
    "audit",
    "run_session",
]

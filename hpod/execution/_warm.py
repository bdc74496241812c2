"""Imported by the trial fork server before it forks any trial (never by the controller).

What every trial process would otherwise redo on its own: the objective registry
(hpod's built-in objective modules and the installed entry points are imported and
scanned the first time an objective is looked up: ~0.25 s per trial on a loaded
2-core machine) and NumPy's random module (``seed_everything``).
"""

from __future__ import annotations

import numpy.random  # noqa: F401  (imported for its side effect: loaded once, in the fork server)

from hpod.objectives import registered_objectives

registered_objectives()

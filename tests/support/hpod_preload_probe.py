"""A user objective that reports whether its module was imported in the trial's own
process (1.0) or before it, in the fork server the trial was forked from (0.0)."""

from __future__ import annotations

import os

_IMPORTED_IN_PID = os.getpid()


def probe(params):
    x = float(params["x"])
    return {"loss": (x - 0.25) ** 2, "imported_in_trial": float(os.getpid() == _IMPORTED_IN_PID)}


probe.metric_names = ("loss", "imported_in_trial")
probe.default_space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def trial_modules(conn):
    """A trial-process target: sends which of hpod's trial modules the process found
    imported before it ran (from the fork server), as ``{module: bool}``."""
    import sys

    conn.send({name: name in sys.modules for name in ("hpod.execution._warm", "hpod.objectives.synthetic")})
    conn.close()

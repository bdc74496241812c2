"""``import hpod.spec`` loads the spec and what it stands on only (issue 12): hpod's
error tree and the objectives, never the store, the engine, the daemon or the CLI. A
fresh interpreter reports its ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys

ALLOWED = ("hpod", "hpod.errors", "hpod.objectives", "hpod.spec")


def _loaded_hpod_modules(statement: str) -> list[str]:
    code = (f"import json, sys; {statement}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'hpod')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_import_hpod_spec_loads_only_errors_objectives_and_spec() -> None:
    loaded = _loaded_hpod_modules("import hpod.spec")
    assert "hpod.spec" in loaded
    outside = [m for m in loaded if not any(m == a or m.startswith(a + ".") for a in ALLOWED)]
    assert outside == [], f"import hpod.spec also loads {outside}"


def test_the_check_sees_a_module_outside_the_spec_layers() -> None:
    # The probe itself: importing the store from the same interpreter is reported.
    loaded = _loaded_hpod_modules("import hpod.spec, hpod.store")
    assert any(m.startswith("hpod.store") for m in loaded)

#!/usr/bin/env bash
# Run the tests marked `floor` on the LOWEST versions pyproject.toml allows of the
# libraries whose APIs hpod leans on most: optuna, botorch, transformers, peft.
#
# .venv-lowest is a thin layer over .venv (built by scripts/setup.sh): it holds only
# those four at their floors, plus whatever pip needs beside them (e.g. the gpytorch
# that old botorch pins); everything else, torch included, is .venv's. Built once,
# reused while pyproject.toml's floors stay the same. Extra arguments go to pytest.
#   scripts/lowest-versions.sh            # build if needed, run the floor tests
#   HPOD_LOWEST_REBUILD=1 scripts/lowest-versions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
LOW=.venv-lowest
BASE_SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TORCH=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))')
# "name==floor" for each library, read from pyproject.toml's ">=" floors
PINS=$(.venv/bin/python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for name in ("optuna", "botorch", "transformers", "peft"):
    (spec,) = [d for d in deps if re.match(rf"{name}\s*(>=|$)", d)]
    floor = re.search(r">=\s*([^,\s]+)", spec).group(1)
    print(f"{name}=={floor}")
PY
)
STAMP="$PINS torch==$TORCH"
if [ -n "${HPOD_LOWEST_REBUILD:-}" ] || [ "$(cat "$LOW/hpod-floors" 2>/dev/null)" != "$STAMP" ]; then
    rm -rf "$LOW"
    .venv/bin/python -m venv "$LOW"
    LOW_SITE=$("$LOW/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # .venv's packages (and its .pth files: the editable hpod) come after this venv's own
    echo "import site; site.addsitedir('$BASE_SITE')" > "$LOW_SITE/zz-hpod-base.pth"
    echo "installing the floors into $LOW: $(echo $PINS)"
    # torch pinned to .venv's build so pip never fetches another one
    "$LOW/bin/python" -m pip install --quiet --disable-pip-version-check $PINS "torch==$TORCH" 2>&1 \
        | grep -v -e "is ignored" -e "outside environment" -e "^ *$" || true
    echo "$STAMP" > "$LOW/hpod-floors"
fi
"$LOW/bin/python" - <<'PY'
import importlib.metadata as m
print("floor versions:", ", ".join(f"{n} {m.version(n)}" for n in ("optuna", "botorch", "transformers", "peft", "torch")))
PY
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$LOW/bin/python" -m pytest -m floor -p no:cacheprovider "$@"

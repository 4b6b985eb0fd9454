#!/usr/bin/env bash
# DeepLab v1/v2 replicated: set up, then execute every notebook (default) or run the tests (--test).
#
#   ./run_all.sh                     set-up, then every notebook on the cpu profile into results/cpu/
#   ./run_all.sh --test              set-up, then the test suite (unit tests + every notebook on smoke)
#   ./run_all.sh --profile smoke     another profile (smoke | cpu | gpu)
#   ./run_all.sh --only 01 02        some notebooks only
#   ./run_all.sh --check             re-run a cheap part, compare with the committed results/cpu/
#   ./run_all.sh --help
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

PROFILES="smoke cpu gpu"
profile="cpu"
mode="notebooks"
only=()
sets=()
pytest_args=()

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF

Options:
  --test               run the test suite (unit tests and every notebook on the smoke profile)
  --profile NAME       one of: $PROFILES (default: cpu)
  --only NN [NN ...]   notebook numbers to execute (default: all)
  --check              re-measure a cheap part of the committed results/<profile>/ and compare
                       (about a minute; exit 1 when a number is outside its tolerance)
  --set KEY=VALUE      config override for every notebook (repeatable), e.g.
                       --set data.voc_root=/data/VOCdevkit --set data.sbd_root=/data/benchmark_RELEASE
  --setup-only         create/refresh .venv and stop
  -h, --help           this help

Set-up: on first use creates .venv (python3 -m venv; pip install -e '.[dev]', then the optional
'.[crf]' (pydensecrf2, needs a C++ compiler; skipped with one line when it does not build)); later runs skip it
while pyproject.toml is unchanged (stamp .venv/.dlib-setup-stamp). PYTHON=python3.11 picks the interpreter.
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --test) mode="test"; shift ;;
    --check) mode="check"; shift ;;
    --set) [ $# -ge 2 ] || { echo "error: --set needs KEY=VALUE" >&2; exit 2; }
           sets+=(--set "$2"); shift 2 ;;
    --setup-only) mode="setup"; shift ;;
    --profile) [ $# -ge 2 ] || { echo "error: --profile needs a value ($PROFILES)" >&2; exit 2; }
               profile="$2"; shift 2 ;;
    --profile=*) profile="${1#--profile=}"; shift ;;
    --only) shift
            while [ $# -gt 0 ] && [[ "$1" != --* ]]; do only+=("$1"); shift; done
            [ ${#only[@]} -gt 0 ] || { echo "error: --only needs notebook numbers, e.g. --only 01 02" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    --) shift; pytest_args+=("$@"); break ;;
    *) echo "error: unknown option '$1' (see ./run_all.sh --help)" >&2; exit 2 ;;
  esac
done

case " $PROFILES " in
  *" $profile "*) ;;
  *) echo "error: unknown profile '$profile'; valid profiles are: $PROFILES" >&2; exit 2 ;;
esac

# ---- set-up -------------------------------------------------------------------------------------
PY="${PYTHON:-python3}"
venv="$here/.venv"
stamp="$venv/.dlib-setup-stamp"
spec_hash="$( (cat pyproject.toml; "$PY" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$spec_hash" ]; then
  echo "== set-up: creating/refreshing $venv (first run takes a few minutes) =="
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || { echo "error: Python >= 3.11 is required ($PY is $("$PY" --version 2>&1)); set PYTHON=python3.11" >&2; exit 2; }
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install --quiet -e '.[dev]'
  # The optional C++ CRF (pydensecrf2) needs a compiler; without it dlib.crf uses its PyTorch lattice.
  "$venv/bin/python" -m pip install --quiet -e '.[dev,crf]' >"$venv/crf-install.log" 2>&1 \
    || echo "== pydensecrf2 did not build (no C++ compiler?): the CRF uses the torch backend; see $venv/crf-install.log =="
  "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (dlib)" >/dev/null
  echo "$spec_hash" > "$stamp"
  echo "== set-up done =="
fi
[ "$mode" = "setup" ] && exit 0

export PATH="$venv/bin:$PATH"
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 2)}"

# ---- test ---------------------------------------------------------------------------------------
if [ "$mode" = "test" ]; then
  echo "== tests (unit tests, then every notebook on the smoke profile) =="
  exec "$venv/bin/python" -m pytest "${pytest_args[@]}"
fi

# ---- check --------------------------------------------------------------------------------------
if [ "$mode" = "check" ]; then
  exec "$venv/bin/python" -m dlib.check --profile "$profile"
fi

# ---- notebooks ----------------------------------------------------------------------------------
exec "$venv/bin/python" -m dlib.notebooks --profile "$profile" ${only[@]+--only "${only[@]}"} ${sets[@]+"${sets[@]}"}

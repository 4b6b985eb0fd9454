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

PROFILES="smoke cpu gpu"

usage() {
  # The header comment above, up to its first non-comment line: no line numbers to keep in step.
  awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
  cat <<EOT

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
while pyproject.toml and the interpreter are unchanged (stamp .venv/.dlib-setup-stamp). PYTHON=python3.11
picks the interpreter; a venv made by another interpreter (path or version, recorded in .venv/.dlib-python)
is rebuilt from scratch.
EOT
}

# ---- set-up -------------------------------------------------------------------------------------
# One line naming an interpreter: its resolved path and its version (a venv's python resolves to the
# interpreter that made it, so this also identifies venvs made before the record existed).
INTERPRETER_ID_CODE='import os, sys; print(os.path.realpath(sys.executable), "%d.%d.%d" % sys.version_info[:3])'

interpreter_id() {  # interpreter_id PYTHON
  "$1" -c "$INTERPRETER_ID_CODE"
}

venv_interpreter() {  # venv_interpreter VENV: the interpreter that made VENV (recorded, else asked)
  cat "$1/.dlib-python" 2>/dev/null || "$1/bin/python" -c "$INTERPRETER_ID_CODE" 2>/dev/null || echo "unknown"
}

setup_venv() {  # setup_venv PYTHON VENV
  local py="$1" venv="$2"
  local stamp="$venv/.dlib-setup-stamp" want spec_hash
  "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || { echo "error: Python >= 3.11 is required ($py is $("$py" --version 2>&1)); set PYTHON=python3.11" >&2
         return 2; }
  want="$(interpreter_id "$py")"
  spec_hash="$( (cat "$here/pyproject.toml"; echo "$want") | sha256sum | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$spec_hash" ]; then
    return 0
  fi
  echo "== set-up: creating/refreshing $venv (first run takes a few minutes) =="
  if [ -x "$venv/bin/python" ]; then
    local have
    have="$(venv_interpreter "$venv")"
    if [ "$have" != "$want" ]; then
      echo "== $venv was made by '$have', PYTHON=$py is '$want': rebuilding it =="
      "$py" -m venv --clear "$venv"
    fi
  else
    "$py" -m venv "$venv"
  fi
  echo "$want" > "$venv/.dlib-python"
  # An old pip still installs everything here, so a failed upgrade (offline, say) is reported, not fatal.
  if ! "$venv/bin/python" -m pip install --quiet --upgrade pip >"$venv/pip-upgrade.log" 2>&1; then
    echo "warning: upgrading pip failed (continuing with $("$venv/bin/python" -m pip --version 2>&1 | cut -d' ' -f1-2));" \
         "last lines of $venv/pip-upgrade.log:" >&2
    tail -n 5 "$venv/pip-upgrade.log" >&2
  fi
  "$venv/bin/python" -m pip install --quiet -e "$here[dev]"
  # The optional C++ CRF (pydensecrf2) needs a compiler; without it dlib.crf uses its PyTorch lattice.
  if ! "$venv/bin/python" -m pip install --quiet -e "$here[dev,crf]" >"$venv/crf-install.log" 2>&1; then
    echo "== pydensecrf2 did not build (no C++ compiler?): the CRF uses the torch backend; last lines of" \
         "$venv/crf-install.log: =="
    tail -n 3 "$venv/crf-install.log"
  fi
  "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (dlib)" >/dev/null
  echo "$spec_hash" > "$stamp"
  echo "== set-up done =="
}

main() {
  local profile="cpu" mode="notebooks"
  local -a only=() sets=() pytest_args=()
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

  cd "$here"
  local venv="$here/.venv"
  setup_venv "${PYTHON:-python3}" "$venv" || exit $?
  [ "$mode" = "setup" ] && exit 0

  export PATH="$venv/bin:$PATH"
  export PYTHONUNBUFFERED=1
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 2)}"

  case "$mode" in
    test)
      echo "== tests (unit tests, then every notebook on the smoke profile) =="
      exec "$venv/bin/python" -m pytest ${pytest_args[@]+"${pytest_args[@]}"} ;;
    check)
      exec "$venv/bin/python" -m dlib.tools.check --profile "$profile" ;;
    *)
      exec "$venv/bin/python" -m dlib.tools.notebooks --profile "$profile" ${only[@]+--only "${only[@]}"} \
        ${sets[@]+"${sets[@]}"} ;;
  esac
}

# Run when executed; when sourced (the tests do), only define the functions above.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi

#!/usr/bin/env bash
# Prepare the benchmark tools, idempotently, under .bench/ (git-ignored):
#   .bench/pa              perf_analyzer 2.60.0 and the Debian 13 runtime it needs (see ../shared/bench-kit)
#   .bench/mlserver-venv   MLServer 1.7.1 + its scikit-learn runtime: the peer we compare against.
#   .bench/mlserver-models MLServer's repository for iris (bench/mlserver_repo.py, rebuilt each time: ~7 s)
#   .bench/plot-venv       matplotlib, only for bench/plot_batching.py (run_batching.py's PNG)
# The peer is never a dependency of modelserve; it lives in its own venv and is only used by bench/.
# Run from the repository root (the Makefile does): bash bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=../shared/bench-kit
PY=${BENCH_PYTHON:-python3.11}

# 1. perf_analyzer. The kit calls pip (any venv's pip will do) and apt-get with a private state dir.
if [ -x .bench/pa/wheel/perf_analyzer/bin/perf_analyzer ] && [ -e .bench/pa/sysroot/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 ]; then
  echo "setup: .bench/pa already present"
else
  echo "setup: fetching perf_analyzer into .bench/pa"
  rm -rf .bench/pa
  PATH=.venv/bin:$PATH "$KIT/get-perf-analyzer" .bench/pa
fi
PA_ROOT=.bench/pa "$KIT/pa" --version >/dev/null 2>&1 || { echo "setup: perf_analyzer does not run" >&2; exit 1; }

# 2. MLServer in its own venv. The versions are pinned; uvloop<0.22 because MLServer 1.7.1 cannot
#    load models with newer uvloop. Nothing here should pull torch (warned about below).
V=.bench/mlserver-venv
REQS=(mlserver==1.7.1 mlserver-sklearn==1.7.1 "tritonclient[grpc]==2.73.0" "uvloop<0.22")
STAMP="$V/.bench-reqs"
if [ -x "$V/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "${REQS[*]}" ] \
   && "$V/bin/python" -c "import mlserver, mlserver_sklearn, joblib" 2>/dev/null \
   && "$V/bin/python" -c "import tritonclient.grpc" 2>/dev/null; then
  echo "setup: $V already present"
else
  echo "setup: creating $V"
  rm -rf "$V"
  "$PY" -m venv "$V"
  mkdir -p .bench
  "$V/bin/pip" install --disable-pip-version-check "${REQS[@]}" > .bench/mlserver-pip.log 2>&1 \
    || { tail -n 30 .bench/mlserver-pip.log >&2; echo "setup: pip install failed" >&2; exit 1; }
  # Two imports: tritonclient's and MLServer's protos both define package "inference" and clash in one process.
  "$V/bin/python" -c "import mlserver, mlserver_sklearn, joblib"
  "$V/bin/python" -c "import tritonclient.grpc"
  echo "${REQS[*]}" > "$STAMP"
fi
if "$V/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
  echo "setup: warning: torch was pulled into $V" >&2
fi

# 3. matplotlib for the batching plot, in a venv of its own (never in .venv, never a project dependency).
P=.bench/plot-venv
PLOT_REQS=(matplotlib==3.11.2)
if [ -x "$P/bin/python" ] && [ "$(cat "$P/.bench-reqs" 2>/dev/null)" = "${PLOT_REQS[*]}" ] \
   && "$P/bin/python" -c "import matplotlib" 2>/dev/null; then
  echo "setup: $P already present"
else
  echo "setup: creating $P"
  rm -rf "$P"
  "$PY" -m venv "$P"
  "$P/bin/pip" install --disable-pip-version-check "${PLOT_REQS[@]}" > .bench/plot-pip.log 2>&1 \
    || { tail -n 30 .bench/plot-pip.log >&2; echo "setup: pip install of matplotlib failed" >&2; exit 1; }
  echo "${PLOT_REQS[*]}" > "$P/.bench-reqs"
fi

# 4. MLServer's model repository: the same fitted estimator as examples/models/iris (needs the project's
#    .venv, which has examples/build_models.py's imports).
.venv/bin/python bench/mlserver_repo.py
echo "setup: done"

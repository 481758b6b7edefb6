#!/usr/bin/env bash
# Prepare the benchmark tools, idempotently, under .bench/ (git-ignored):
#   .bench/pa              perf_analyzer 2.60.0 and, on glibc < 2.38, the Debian 13 runtime it needs
#                          (bench/perf_analyzer.sh says why)
#   .bench/mlserver-venv   MLServer 1.7.1 + its scikit-learn runtime: the peer we compare against.
#   .bench/mlserver-models MLServer's repository for iris (bench/mlserver_repo.py, rebuilt each time: ~7 s)
#   .bench/plot-venv       matplotlib, only for bench/plot_batching.py (run_batching.py's PNG)
#   .bench/pytriton-venv   PyTriton 0.7.0 (bundles tritonserver and its Python backend) + onnxruntime: the
#                          optional second peer, Triton (run_core.py --with-triton, bench/pytriton_launcher.py).
#                          Optional: if it cannot be installed, setup warns and carries on, and Triton's rows
#                          in run_core.py's report say why they are missing.
# The peers are never dependencies of modelserve; each lives in its own venv and is only used by bench/.
# Needs the network (PyPI, and a Debian mirror on glibc < 2.38) on the first run only; later runs check and
# reuse what is there. Run from the repository root (the Makefile does): bash bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${BENCH_PYTHON:-python3.11}

# 1. perf_analyzer. `fetch` is idempotent itself (it keeps a version stamp and checks the binary starts); any
#    Python with pip can download the wheel, and the project's venv is the one known to have pip.
PIP_PYTHON=.venv/bin/python
[ -x "$PIP_PYTHON" ] || PIP_PYTHON=python3
PYTHON=$PIP_PYTHON bash bench/perf_analyzer.sh fetch .bench/pa
PA_ROOT=.bench/pa bash bench/perf_analyzer.sh version >/dev/null 2>&1 \
  || { echo "setup: perf_analyzer does not run; see: PA_ROOT=.bench/pa bash bench/perf_analyzer.sh version" >&2; exit 1; }

# 2. MLServer in its own venv. The versions are pinned; uvloop<0.22 because MLServer 1.7.1 cannot
#    load models with newer uvloop; tritonclient because bench/mlserver_launcher.py builds its gRPC model-config
#    replies with tritonclient's protobuf classes. Nothing here should pull torch (warned about below).
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

# 4. Triton through PyTriton, in its own venv; optional (a warning, not a failure, when it cannot be installed).
#    The wheel is manylinux_2_35 (glibc >= 2.35) and bundles tritonserver; onnxruntime runs the same ONNX file
#    as modelserve. The check imports what bench/pytriton_launcher.py imports and finds the bundled binary.
T=.bench/pytriton-venv
TRITON_REQS=(nvidia-pytriton==0.7.0 onnxruntime==1.32.0 numpy==1.26.4)
TRITON_CHECK='import numpy, onnxruntime, pathlib, pytriton, pytriton.triton
bin = pathlib.Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"
assert bin.is_file(), f"no {bin}"'
rm -f .bench/pytriton-unavailable
if [ -x "$T/bin/python" ] && [ "$(cat "$T/.bench-reqs" 2>/dev/null)" = "${TRITON_REQS[*]}" ] \
   && "$T/bin/python" -c "$TRITON_CHECK" 2>/dev/null; then
  echo "setup: $T already present"
else
  echo "setup: creating $T"
  rm -rf "$T"
  mkdir -p .bench
  if "$PY" -m venv "$T" > .bench/pytriton-pip.log 2>&1 \
     && "$T/bin/pip" install --disable-pip-version-check "${TRITON_REQS[@]}" >> .bench/pytriton-pip.log 2>&1 \
     && "$T/bin/python" -c "$TRITON_CHECK" >> .bench/pytriton-pip.log 2>&1; then
    echo "${TRITON_REQS[*]}" > "$T/.bench-reqs"
  else
    tail -n 15 .bench/pytriton-pip.log >&2
    echo "setup: warning: could not install PyTriton into $T (see .bench/pytriton-pip.log);" \
      "run_core.py --with-triton will report Triton as unavailable" >&2
    # run_core.py shows this reason in its report; the half-made venv goes so the next run retries.
    echo "pip install of ${TRITON_REQS[*]} failed; see .bench/pytriton-pip.log" > .bench/pytriton-unavailable
    rm -rf "$T"
  fi
fi

# 5. MLServer's model repository: the same fitted estimator as examples/models/iris (needs the project's
#    .venv, which has examples/build_models.py's imports).
.venv/bin/python bench/mlserver_repo.py
echo "setup: done"

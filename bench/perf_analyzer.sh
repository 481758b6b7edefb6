#!/usr/bin/env bash
# perf_analyzer for the benchmarks, without touching the system: `fetch DEST` installs it into DEST, `run`
# runs it. Both servers are driven by this one client, so the comparison does not depend on our own code.
#
#   bash bench/perf_analyzer.sh fetch .bench/pa          # once (bench/setup.sh does it); idempotent
#   PA_ROOT=.bench/pa bash bench/perf_analyzer.sh run -m iris -u 127.0.0.1:8001 -i grpc ...
#   bash bench/perf_analyzer.sh version                  # prints its version, or says why it cannot run
#
# Why it is not `pip install perf-analyzer`: every real release on PyPI is a manylinux_2_38 wheel (glibc 2.38,
# built with GCC 13). On an older glibc, such as Debian 12's 2.36, pip skips them all and silently installs
# the 0.1.0 placeholder instead, which has no binary. So `fetch` downloads the 2.60.0 wheel for that platform
# explicitly and, where the system's glibc is older than 2.38, also Debian 13's dynamic loader, libc and
# libstdc++ into DEST/sysroot; `run` then starts the binary through that loader. Nothing is installed into
# the system or into any virtual environment.
#
# fetch needs: python3 with pip (PYTHON=... picks one), and on an older glibc apt-get and dpkg-deb.
set -euo pipefail

PA_VERSION=2.60.0
# glibc the wheel was built against (its manylinux tag); below this the binary cannot be loaded directly.
PA_GLIBC=2.38
# Debian's release whose libc and libstdc++ are new enough (trixie: glibc 2.41, GCC 14). We ask for the suite,
# not exact package versions: a mirror keeps only a suite's current versions, so pinned ones would vanish.
SYSROOT_SUITE=trixie
SYSROOT_PACKAGES=(libc6 libstdc++6 libgcc-s1)
# The binary also links libz, libssl and libcrypto; those come from the system (Debian 12 has ABI-compatible
# ones), which is why the system's library folders follow the sysroot's in the search path below.
SYSTEM_LIBS=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu

die() { echo "perf_analyzer.sh: $*" >&2; exit 1; }

binary_of() { echo "$1/wheel/perf_analyzer/bin/perf_analyzer"; }
loader_of() { echo "$1/sysroot/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"; }

# True when this system's glibc is older than the wheel's (sort -V orders version strings numerically).
glibc_too_old() {
  local have
  have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  [ -n "$have" ] || die "cannot read the system's glibc version (getconf GNU_LIBC_VERSION); perf_analyzer needs glibc"
  [ "$have" != "$PA_GLIBC" ] && [ "$(printf '%s\n%s\n' "$have" "$PA_GLIBC" | sort -V | head -n1)" = "$have" ]
}

# Start perf_analyzer from folder $1 with the remaining arguments (exec: signals and exit status pass through).
exec_from() {
  local root=$1 binary loader lib
  shift
  binary=$(binary_of "$root")
  loader=$(loader_of "$root")
  [ -x "$binary" ] || die "no perf_analyzer in $root: run \`bash bench/setup.sh\` (or \`bash bench/perf_analyzer.sh fetch $root\`)"
  if [ -e "$loader" ]; then
    lib=$(dirname "$loader")
    # Running the loader by path, rather than the binary, makes it use the sysroot's libc for this process only.
    exec "$loader" --library-path "$lib:$SYSTEM_LIBS" "$binary" "$@"
  fi
  exec "$binary" "$@"
}

# Debian 13 runtime into $1/sysroot, with apt-get on a private state folder so the system's apt sources, lists
# and package database are never read or changed.
fetch_sysroot() {
  local dest=$1 mirror="http://deb.debian.org/debian" deb
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "glibc is older than $PA_GLIBC and apt-get/dpkg-deb are missing: run on a Debian-like system, or one with glibc >= $PA_GLIBC"
  # On Debian, use the mirror this machine already uses (it may be the only one reachable); elsewhere the
  # public one, since e.g. an Ubuntu mirror has no Debian suites.
  if grep -qs '^ID=debian' /etc/os-release; then
    local local_mirror
    local_mirror=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2; exit}' || true)
    [ -n "$local_mirror" ] || local_mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -z "$local_mirror" ] || mirror=$local_mirror
  fi
  [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] \
    || die "missing /usr/share/keyrings/debian-archive-keyring.gpg (apt-get install debian-archive-keyring), needed to verify $SYSROOT_SUITE's packages"
  mkdir -p "$dest/apt/lists/partial" "$dest/apt/cache/archives/partial" "$dest/downloads" "$dest/sysroot"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SYSROOT_SUITE main" >"$dest/apt/sources.list"
  local apt_opts=(
    -o Dir::Etc::SourceList="$dest/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o Dir::State::Lists="$dest/apt/lists" -o Dir::Cache="$dest/apt/cache" -o Dir::State::status=/dev/null
    # Bounded: a mirror that stops answering fails the fetch instead of hanging it.
    -o Acquire::http::Timeout=60 -o Acquire::Retries=2
  )
  echo "perf_analyzer.sh: fetching ${SYSROOT_PACKAGES[*]} from $mirror $SYSROOT_SUITE"
  apt-get -q "${apt_opts[@]}" update >"$dest/apt/update.log" 2>&1 \
    || { tail -n 20 "$dest/apt/update.log" >&2; die "apt-get update for $SYSROOT_SUITE failed (log: $dest/apt/update.log)"; }
  (cd "$dest/downloads" && apt-get -q "${apt_opts[@]}" download "${SYSROOT_PACKAGES[@]}") >"$dest/apt/download.log" 2>&1 \
    || { tail -n 20 "$dest/apt/download.log" >&2; die "apt-get download ${SYSROOT_PACKAGES[*]} failed (log: $dest/apt/download.log)"; }
  for deb in "$dest"/downloads/*.deb; do dpkg-deb -x "$deb" "$dest/sysroot"; done
}

cmd_fetch() {
  [ $# -eq 1 ] || die "usage: perf_analyzer.sh fetch DEST"
  local dest stamp tmp python
  dest=$(realpath -m "$1")
  stamp="perf-analyzer $PA_VERSION"
  if [ "$(cat "$dest/.stamp" 2>/dev/null)" = "$stamp" ] && (exec_from "$dest" --version >/dev/null 2>&1); then
    echo "perf_analyzer.sh: $dest already holds perf_analyzer $PA_VERSION"
    return
  fi
  python=${PYTHON:-python3}
  "$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip: set PYTHON to a Python with pip (e.g. PYTHON=.venv/bin/python)"
  # Build next to DEST and swap it in at the end, so an interrupted fetch never leaves a half folder behind
  # that a later check would take for a complete one.
  tmp="$dest.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp/downloads"
  echo "perf_analyzer.sh: downloading perf-analyzer $PA_VERSION (manylinux_${PA_GLIBC/./_}_x86_64 wheel)"
  # --platform makes pip take the real wheel even though this system's glibc would not select it.
  "$python" -m pip download --quiet --disable-pip-version-check --timeout 60 --no-deps --only-binary=:all: \
    --platform "manylinux_${PA_GLIBC/./_}_x86_64" -d "$tmp/downloads" "perf-analyzer==$PA_VERSION" \
    || die "pip could not download perf-analyzer==$PA_VERSION (network? a PyPI mirror via PIP_INDEX_URL?)"
  # A wheel is a zip; Python's zipfile unpacks it, so unzip is not needed. It drops the exec bit: restore it.
  "$python" -m zipfile -e "$tmp"/downloads/perf_analyzer-"$PA_VERSION"-*.whl "$tmp/wheel"
  chmod +x "$(binary_of "$tmp")"
  if glibc_too_old; then
    fetch_sysroot "$tmp"
  fi
  (exec_from "$tmp" --version >/dev/null 2>&1) \
    || die "the fetched perf_analyzer does not start; try: PA_ROOT=$tmp bash $0 run --version"
  echo "$stamp" >"$tmp/.stamp"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  echo "perf_analyzer.sh: perf_analyzer $PA_VERSION ready in $dest"
}

root_from_env() {
  # Default: the folder bench/setup.sh fills, whatever the current directory.
  echo "${PA_ROOT:-$(cd "$(dirname "$0")/.." && pwd)/.bench/pa}"
}

case "${1:-}" in
  fetch) shift; cmd_fetch "$@" ;;
  run) shift; exec_from "$(root_from_env)" "$@" ;;
  version) exec_from "$(root_from_env)" --version ;;
  *) die "usage: perf_analyzer.sh fetch DEST | run [perf_analyzer arguments] | version (PA_ROOT: the fetched folder, default .bench/pa)" ;;
esac

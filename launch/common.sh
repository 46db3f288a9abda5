# Shared by the launch scripts (sourced, not run): where things are, Open MPI
# as root, the build, and the checks that stop a script with one line when
# something it needs is missing. Only the README's two commands
# (launch/train-fashion-mnist, launch/test) install packages; every other
# script says what is missing and how to get it.
#
# Two layouts: the source tree (the program in $NNDIST_BUILD, default
# build/; outputs under the tree's runs/ and data/), and an installed copy
# (`cmake --install`: these scripts in PREFIX/share/nndist/launch beside an
# installed.sh naming the program in PREFIX/bin; outputs under the current
# directory). NNDIST_BIN, when set, names the program in either.
_nndist_launch=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NNDIST_ROOT=$(cd "$_nndist_launch/.." && pwd)
if [ -f "$_nndist_launch/installed.sh" ]; then
  NNDIST_INSTALLED=1
  source "$_nndist_launch/installed.sh" # sets NNDIST_INSTALLED_BIN
  NNDIST_BIN=${NNDIST_BIN:-$(cd "$(dirname "$NNDIST_INSTALLED_BIN")" 2> /dev/null && pwd)/nndist}
  NNDIST_BUILD=${NNDIST_BUILD:-$(dirname "$NNDIST_BIN")}
  NNDIST_RUNS=${NNDIST_RUNS:-$PWD/runs}
  NNDIST_DATA=${NNDIST_DATA:-$PWD/data}
else
  NNDIST_INSTALLED=""
  NNDIST_BUILD=${NNDIST_BUILD:-$NNDIST_ROOT/build}
  NNDIST_BIN=${NNDIST_BIN:-$NNDIST_BUILD/nndist}
  NNDIST_RUNS=${NNDIST_RUNS:-$NNDIST_ROOT/runs}
  NNDIST_DATA=${NNDIST_DATA:-$NNDIST_ROOT/data}
fi
# Debian's python3 has numpy and matplotlib when they are installed; a
# cluster's comes from its module.
if [ -z "${NNDIST_PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then NNDIST_PYTHON=/usr/bin/python3; else NNDIST_PYTHON=python3; fi
fi
# srun's MPI plugin: pmix for an Open MPI built with PMIx (Debian's, most
# sites' Open MPI 4 and 5), pmi2 for MPICH, Intel MPI or an older Open MPI;
# `srun --mpi=list` shows what the site offers.
NNDIST_SRUN_MPI=${NNDIST_SRUN_MPI:-pmix}

# Open MPI refuses to run as root unless told; containers and CI run as root.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# mpirun with N ranks; oversubscribes only when the machine has fewer cores.
nndist_mpirun() {
  local np=$1; shift
  local extra=()
  [ "$(nproc)" -lt "$np" ] && extra+=(--oversubscribe)
  mpirun -np "$np" "${extra[@]}" "$@"
}

# Configures and builds (Release); extra arguments go to cmake.
nndist_build() {
  cmake -S "$NNDIST_ROOT" -B "$NNDIST_BUILD" -DCMAKE_BUILD_TYPE=Release "$@"
  cmake --build "$NNDIST_BUILD" -j "$(nproc)"
}

# Stops the calling script with one line: nndist_missing WHAT HOW
nndist_missing() {
  echo "$(basename "$0"): $1 is missing; $2" >&2
  exit 1
}

# The program, built first when this is a source tree without one (the
# build installs nothing: a missing library stops cmake, which says which),
# except inside a Slurm job: compute nodes run what was built before.
nndist_need_program() {
  [ -x "$NNDIST_BIN" ] && return 0
  [ -z "$NNDIST_INSTALLED" ] && [ -z "${SLURM_JOB_ID:-}" ] && [ -f "$NNDIST_ROOT/CMakeLists.txt" ] \
    && command -v cmake > /dev/null 2>&1 && { nndist_build >&2 && [ -x "$NNDIST_BIN" ] && return 0; }
  nndist_missing "the nndist program ($NNDIST_BIN)" \
    "build it (launch/test on Debian, or README: Building by hand) or set NNDIST_BIN"
}

# Commands on PATH: nndist_need_commands DEBIAN-PACKAGES COMMAND...
nndist_need_commands() {
  local pkgs=$1 c; shift
  for c in "$@"; do
    command -v "$c" > /dev/null 2>&1 || nndist_missing "'$c'" \
      "on Debian: launch/install-deps $pkgs; elsewhere: module load (or install) it"
  done
}

# Python modules of $NNDIST_PYTHON: nndist_need_python DEBIAN-PACKAGES MODULE...
nndist_need_python() {
  local pkgs=$1 m; shift
  command -v "$NNDIST_PYTHON" > /dev/null 2>&1 || nndist_missing "python ($NNDIST_PYTHON)" \
    "on Debian: launch/install-deps python3; elsewhere: module load python, or set NNDIST_PYTHON"
  for m in "$@"; do
    "$NNDIST_PYTHON" -c "import $m" > /dev/null 2>&1 || nndist_missing "the python module '$m' ($NNDIST_PYTHON)" \
      "on Debian: launch/install-deps $pkgs; elsewhere: pip install --user $m, or set NNDIST_PYTHON"
  done
}

# The line that says why a run failed: nndist's own "nndist: error:" line
# (not Open MPI's banner that follows it), else the log's last lines.
nndist_error_line() {
  if grep -q 'nndist: error:' "$1" 2> /dev/null; then
    grep 'nndist: error:' "$1" | awk '!seen[$0]++' | head -n 3 || true
  else
    tail -n 3 "$1" || true
  fi
}

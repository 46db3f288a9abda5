# Shared by the launch scripts (sourced, not run): where things are, Open MPI
# as root, and the build.
NNDIST_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NNDIST_BUILD=${NNDIST_BUILD:-$NNDIST_ROOT/build}

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

# Shared by the shell tests that count checks (sourced, not run): ok/bad
# count and print, num reads a number from a JSON file, refused runs
# `nndist train` and expects exactly one error line matching a pattern, and
# checks_done prints the tally and fails the test on any bad check.
# Needs $bin (the nndist program).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
num() { sed -n "s/.*\"$2\": \([-0-9.e]*\).*/\1/p" "$1" | head -1; } # num FILE KEY
refused() {                                                             # refused "what" "message pattern" train-args...
  local what=$1 want=$2 out
  shift 2
  out=$("$bin" train "$@" 2>&1)
  [ $? -ne 0 ] && [ "$(grep -c 'nndist: error' <<< "$out")" -eq 1 ] && grep -q "$want" <<< "$out" \
    && ok "$what: refused" || bad "$what: $out"
}
checks_done() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

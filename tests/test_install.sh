#!/usr/bin/env bash
# cmake --install into a temporary prefix: the program runs from there; the
# man page and the bash completion exist, hold every option of `nndist
# train` (the option table) and every command of `nndist help`, and work
# (the page renders with man -l when man is installed; the completion
# completes commands, subcommands, option names and choices); the installed
# launch scripts find the installed program and write under the current
# directory. Usage: test_install.sh CMAKE BUILD_DIR TMPDIR
set -euo pipefail
cmake=$1 build=$2 tmp=$3/install
rm -rf "$tmp" && mkdir -p "$tmp/work"
prefix=$tmp/prefix
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

"$cmake" --install "$build" --prefix "$prefix" > "$tmp/install.log" || { cat "$tmp/install.log"; exit 1; }
bin=$prefix/bin/nndist man=$prefix/share/man/man1/nndist.1 comp=$prefix/share/bash-completion/completions/nndist
launch=$prefix/share/nndist/launch
for f in "$bin" "$man" "$comp" "$launch/common.sh" "$launch/installed.sh" "$launch/scaling" "$launch/scaling_report.py" \
  "$launch/hpsearch" "$launch/fashion-cnn.ini" "$launch/slurm/train.sbatch" "$launch/slurm/hpsearch.sbatch" \
  "$launch/slurm/scaling.sbatch"; do
  [ -e "$f" ] || fail "not installed: ${f#"$prefix"/}"
done
[ -x "$bin" ] && [ -x "$launch/scaling" ] && [ -x "$launch/slurm/train.sbatch" ] || fail "installed programs not executable"

version=$("$bin" --version) || fail "installed nndist --version failed"
[[ $version =~ ^nndist\ [0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "nndist --version printed '$version'"
grep -q "^\.TH NNDIST 1 .*\"${version}\"" "$man" || fail "the man page's header does not name '$version'"

# Every option of the table and every command, in both files.
options=$("$bin" train --help --markdown | grep -o '^| `--[A-Za-z0-9-]*' | sed 's/^| `//')
[ "$(wc -l <<< "$options")" -ge 70 ] || fail "only $(wc -l <<< "$options") options in the table"
for o in $options; do
  grep -qF -- "${o//-/\\-}" "$man" || fail "man page lacks $o"
  grep -q -- " ${o}[ ']" "$comp" || fail "completion lacks $o"
done
commands=$("$bin" help | sed -n '/^commands:/,$p' | grep -o '^  [a-z][a-z-]*' | tr -d ' ' | sort -u)
for c in $commands; do
  grep -q "^\\\\fB${c//-/\\\\-}" "$man" || fail "man page lacks the command $c" # roff: show\-weights
done

if command -v man > /dev/null 2>&1; then
  page=$(MANWIDTH=100 man -l "$man" 2> "$tmp/man.err") || fail "man -l failed: $(cat "$tmp/man.err")"
  for want in "NAME" "TRAIN OPTIONS" "--checkpoint-dir DIR" "--mode V" "EXIT STATUS"; do
    grep -q -- "$want" <<< "$page" || fail "the rendered page lacks '$want'"
  done
else
  echo "man is not installed: the page was checked as text only"
fi

# The completion, as bash runs it.
completions=$(bash -c '
  source "$1"
  c() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _nndist; echo "${COMPREPLY[*]}"; }
  c nndist ""; c nndist data ""; c nndist train --mod; c nndist train --mode ""; c nndist train --opt adam
  c nndist train --no-shuff' _ "$comp") || fail "the completion script failed"
expected="--help --version $(tr '\n' ' ' <<< "$commands")"
mapfile -t got <<< "$completions"
[ "$(tr ' ' '\n' <<< "${got[0]}" | sort | tr '\n' ' ')" = "$(tr ' ' '\n' <<< "$expected" | grep . | sort | tr '\n' ' ')" ] ||
  fail "commands completed as '${got[0]}', expected '$expected'"
[ "${got[1]}" = "import-idx synth" ] || fail "data subcommands: '${got[1]}'"
[ "${got[2]}" = "--mode" ] || fail "--mod completed as '${got[2]}'"
[ "${got[3]}" = "sync async ssp local" ] || fail "--mode choices: '${got[3]}'"
[ "${got[4]}" = "adam adamw" ] || fail "--opt adam completed as '${got[4]}'"
[ "${got[5]}" = "--no-shuffle" ] || fail "--no-shuff completed as '${got[5]}'"

# The installed scripts use the installed program and the current directory.
found=$(cd "$tmp/work" && bash -c 'source "$1/common.sh"; echo "$NNDIST_BIN $NNDIST_RUNS"' _ "$launch")
[ "$found" = "$bin $tmp/work/runs" ] || fail "installed common.sh: '$found', expected '$bin $tmp/work/runs'"
(
  cd "$tmp/work"
  "$bin" data synth --out d.h5 --rows 300 --val-rows 100 --test-rows 0 --features 6 --classes 3 > /dev/null
  PATH=/usr/bin:/bin "$launch/hpsearch" --data d.h5 --trials 1 --rounds 1 --epochs 1 --np 1 -- --threads 1
) > "$tmp/hpsearch.log" 2>&1 || fail "installed hpsearch failed: $(cat "$tmp/hpsearch.log")"
grep -q ',ok,' "$tmp/work/runs/hpsearch/trials.csv" 2> /dev/null ||
  fail "installed hpsearch wrote no trial under the current directory: $(cat "$tmp/hpsearch.log")"

[ "$failures" -eq 0 ] || { echo "$failures failed"; exit 1; }
echo "cmake --install: program, man page, completion and launch scripts work from $prefix"

#!/usr/bin/env bash
# docs/options.md holds the table `nndist train --help --markdown` prints,
# line for line, so the reference cannot drift from the option table.
# Usage: test_options_doc.sh NNDIST DOC
set -euo pipefail
bin=$1 doc=$2
table=$("$bin" train --help --markdown)
rows=$(grep -c '^| `--' <<< "$table")
[ "$rows" -ge 70 ] || { echo "FAIL: only $rows option rows in the generated table"; exit 1; }
missing=$(grep -vxFf "$doc" <<< "$table" || true)
if [ -n "$missing" ]; then
  echo "FAIL: $doc lacks these lines of 'nndist train --help --markdown' (regenerate its table):"
  echo "$missing"
  exit 1
fi
echo "docs/options.md matches the option table ($rows options)"

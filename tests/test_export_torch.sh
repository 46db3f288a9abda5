#!/usr/bin/env bash
# The optional test of launch/export (label `optional`): runs
# test_export_torch.py with Debian's /usr/bin/python3 when it has torch,
# h5py and numpy, and otherwise reports SKIPPED with the reason (exit 77,
# ctest's SKIP_RETURN_CODE): the required suite does not depend on torch.
# Usage: test_export_torch.sh NNDIST TEST_EXPORT_LOGITS TMPDIR
set -uo pipefail
py=/usr/bin/python3
if [ ! -x "$py" ]; then
  echo "SKIPPED: launch/export needs $py with Debian's python3-torch, python3-h5py and python3-numpy ($py is missing)"
  exit 77
fi
if ! why=$("$py" -c 'import numpy, h5py, torch' 2>&1); then
  echo "SKIPPED: launch/export needs Debian's python3-torch, python3-h5py and python3-numpy (${why##*$'\n'})"
  exit 77
fi
exec "$py" "$(dirname "${BASH_SOURCE[0]}")/test_export_torch.py" "$@"

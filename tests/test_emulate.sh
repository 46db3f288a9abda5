#!/usr/bin/env bash
# launch/emulate-cluster: a tiny 2-node job runs through the emulated
# network (each rank in its own namespace, on its own address, behind a tbf
# link), and the emulation leaves nothing behind: no namespace of the run,
# no process, and the machine's own links, addresses, routes and qdiscs as
# they were, also when the script is killed (SIGTERM) mid-run. Without root
# or network namespaces it reports SKIPPED with the reason (exit 77).
# Usage: test_emulate.sh NNDIST TMPDIR
set -uo pipefail
bin=$1 tmp=$2/emulate
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
emu=$root/launch/emulate-cluster
source "$root/tests/checks.sh"
if ! why=$("$emu" --check 2>&1); then
  echo "SKIPPED: ${why#emulate-cluster: }"
  exit 77
fi
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1
"$bin" data synth --out d.h5 --rows 512 --test-rows 128 --features 12 --classes 3 > /dev/null

# The machine's own network, as the emulation must leave it.
root_state() { # less the address and route lifetimes, which tick
  ip -br link
  ip addr | grep -v "_lft"
  ip route
  ip -6 route 2> /dev/null | grep -v expires
  tc qdisc show
}
root_state > before.txt
left_of() { ip netns list | awk '{print $1}' | grep -E "^$1-" || true; } # namespaces of a prefix

# 1. Each rank is on its own node: its own address, a tbf link at the rate.
"$emu" --quiet --nodes 2 --rate 1gbit -- sh -c 'ip -br -4 addr show eth0; tc qdisc show dev eth0' > where.txt 2>&1 &
pid=$!
wait $pid && ok "a command ran as 2 ranks" || bad "a command as 2 ranks: $(tail -3 where.txt)"
grep -q '10\.217\.0\.1/24' where.txt && grep -q '10\.217\.0\.2/24' where.txt \
  && ok "the two ranks on two node addresses" || bad "node addresses: $(cat where.txt)"
[ "$(grep -c 'tbf.*rate 1Gbit' where.txt)" -eq 2 ] && ok "each node's link shaped with tbf at 1gbit" \
  || bad "tbf: $(cat where.txt)"
[ -z "$(left_of "nde$pid")" ] && ok "its namespaces removed" || bad "left: $(left_of "nde$pid")"

# 2. A 2-node training job over Open MPI's TCP, with the latency probe.
"$emu" --nodes 2 --rate 10gbit -- "$bin" train --data d.h5 --hidden 16 --epochs 1 --batch 32 --threads 1 \
  --progress none --summary s.json > train.log 2>&1 &
pid=$!
if wait $pid && [ -n "$(num s.json test_accuracy)" ]; then ok "nndist train on 2 emulated nodes"; else
  bad "train: $(tail -3 train.log)"
fi
grep -q 'measured between node 0 and node 1: latency [0-9.]* us' train.log && ok "latency measured and printed" \
  || bad "no latency line: $(head -3 train.log)"
[ -z "$(left_of "nde$pid")" ] && ok "its namespaces removed" || bad "left: $(left_of "nde$pid")"

# 3. Killed mid-run: the ranks (a sleep no one else runs) and the network go.
mark=41.$$
"$emu" --quiet --nodes 2 --rate 1gbit -- sleep "$mark" > killed.log 2>&1 &
pid=$!
for _ in $(seq 100); do
  [ -n "$(ip netns pids "nde$pid-n1" 2> /dev/null)" ] && break
  sleep 0.1
done
[ -n "$(ip netns pids "nde$pid-n1" 2> /dev/null)" ] && ok "ranks running on node 1" || bad "node 1 never ran"
kill -TERM $pid
wait $pid
rc=$?
[ "$rc" -eq 143 ] && ok "killed: exit 143" || bad "killed: exit $rc"
[ -z "$(left_of "nde$pid")" ] && ok "killed: its namespaces removed" || bad "killed: left $(left_of "nde$pid")"
pgrep -f "sleep $mark" > /dev/null && bad "killed: its ranks still run" || ok "killed: no rank left"

# 4. --setup-only leaves the network up (a later run's sweep keeps it);
# --teardown removes it; a leftover of a dead run is swept.
prefix=$("$emu" --quiet --nodes 3 --rate 25gbit --setup-only 2> /dev/null)
[ "$(left_of "$prefix" | wc -l)" -eq 4 ] && ok "--setup-only: switch and 3 nodes" || bad "--setup-only: $(left_of "$prefix")"
ip netns add nde999999-n0 # what a SIGKILLed run would leave (no such PID)
"$emu" --quiet --nodes 1 --rate 1gbit -- true
[ -z "$(left_of nde999999)" ] && ok "a dead run's leftovers swept" || bad "not swept: $(left_of nde999999)"
[ "$(left_of "$prefix" | wc -l)" -eq 4 ] && ok "--setup-only's network kept by the sweep" || bad "swept $prefix"
"$emu" --teardown "$prefix"
[ -z "$(left_of "$prefix")" ] && ok "--teardown removes it" || bad "--teardown left $(left_of "$prefix")"

# 5. Refusals: one line each.
out=$("$emu" --nodes 2 --rate fast -- true 2>&1)
[ $? -eq 2 ] && [ "$(wc -l <<< "$out")" -eq 1 ] && grep -q -- '--rate fast' <<< "$out" && ok "bad rate: one line" \
  || bad "bad rate: $out"
if unshare --user true 2> /dev/null; then # not root: a user namespace's nobody
  out=$(unshare --user "$emu" --nodes 2 --rate 1gbit -- true 2>&1)
  [ $? -eq 3 ] && [ "$(wc -l <<< "$out")" -eq 1 ] && grep -q 'root' <<< "$out" && ok "not root: one line" \
    || bad "not root: $out"
fi

root_state > after.txt
diff before.txt after.txt > /dev/null && ok "the machine's links, addresses, routes and qdiscs unchanged" \
  || bad "root namespace changed: $(diff before.txt after.txt | head -5)"
checks_done

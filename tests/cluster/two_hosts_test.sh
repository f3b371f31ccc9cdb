#!/usr/bin/env bash
# Two "hosts" on one machine: network namespaces A (10.77.0.1) and B (10.77.0.2) joined by a veth
# pair. mpirun runs in A; it starts B's orted through a stand-in for ssh (plm_rsh_agent) that runs
# the command inside B with `ip netns exec`. Ranks talk only over OpenMPI's TCP transport on the veth
# (btl tcp,self; pml ob1, so UCX cannot take a shortcut; oob and btl pinned to 10.77.0.0/24), so
# rank 0 and rank 1 really are on different network stacks: TP 2 across two hosts.
#  1. golden: the 4 golden prompts → the golden greedy tokens.
#  2. fault a: kill -9 the remote rank (in B) mid-job → the job ends within 30 s with an error
#     naming the lost rank, finished lines stay, --resume completes every id exactly once.
#  3. fault b: take the link down mid-job (inside B) → the job must end within 30 s; then --resume.
#     (mpirun's own OOB keepalive, tuned in two_hosts, or gptj's step watchdog ends it.)
#  4. fault c: SIGSTOP the remote rank → only gptj's step watchdog (--step-timeout 10) can end the job
#     within 30 s (nothing else notices a live but stopped process); then --resume.
#  5. the same hosts as 2 data-parallel replicas (--tp 1, one per host): golden; SIGSTOP of the remote
#     replica ends the job within 30 s (rank 0's replica link); then --resume.
# Needs python3 (as the other tests). Skips (exit 77, "SKIP: reason"; ctest reports it as skipped)
# where namespaces cannot be made or entered: not root, no `ip`, no CAP_SYS_ADMIN, or no mount
# propagation (`ip netns exec` makes / a recursive slave in a new mount namespace and mounts /sys:
# a container or chroot may refuse either).
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
MODEL=$DATA/tiny-gptj-a/model
GOLDEN=$DATA/tiny-gptj-a/expected/greedy.json
N=200            # lines in the fault-test job: long enough to inject a fault mid-job
FAULT_LIMIT=30   # seconds a job may take to end after a fault (issue 7)

skip() { echo "SKIP: $*"; exit 77; }
export PATH=$PATH:/usr/sbin:/sbin
[ "$(id -u)" -eq 0 ] || skip "needs root for ip netns"
command -v ip >/dev/null || skip "no ip command (apt-get install iproute2)"
command -v mpirun >/dev/null || skip "no mpirun"

# Unique names (interfaces ≤ 15 chars) so parallel runs do not collide; the subnet can be the same
# for every run because each pair lives in its own namespaces.
NSA=gptj$$a
NSB=gptj$$b
VA=gv$$a
VB=gv$$b
HA=10.77.0.1
HB=10.77.0.2

JOB_PID=""
cleanup() {
  local code=$?
  [ -n "$JOB_PID" ] && kill -9 -- -"$JOB_PID" 2>/dev/null
  kill_ns_procs
  ip netns del "$NSA" 2>/dev/null   # deleting a namespace also deletes its end of the veth pair
  ip netns del "$NSB" 2>/dev/null
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
  exit $code
}
kill_ns_procs() {  # SIGKILL every process left in our two namespaces (all started by this test)
  local ns p
  for ns in "$NSA" "$NSB"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  for _ in $(seq 20); do
    [ -z "$(ip netns pids "$NSA" 2>/dev/null)$(ip netns pids "$NSB" 2>/dev/null)" ] && return
    sleep 0.1
  done
}
trap cleanup EXIT

ip netns add "$NSA" 2>/dev/null || skip "cannot create a network namespace (needs CAP_SYS_ADMIN)"
# What every later step does: run a command inside a namespace.
if ! err=$(ip netns exec "$NSA" true 2>&1); then
  skip "cannot run a command in a network namespace (ip netns exec: ${err:-failed}): a container or chroot without mount propagation"
fi
ip netns add "$NSB" || fail "second namespace"
ip link add "$VA" netns "$NSA" type veth peer name "$VB" netns "$NSB" || skip "cannot create a veth pair"
ip -n "$NSA" addr add $HA/24 dev "$VA"
ip -n "$NSB" addr add $HB/24 dev "$VB"
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
ip -n "$NSA" link set "$VA" up
ip -n "$NSB" link set "$VB" up
# reachable: a TCP connect from A to B's closed port 9 is refused (RST) when the link works, and
# times out when it does not (no ping on a minimal machine).
reachable() {
  ip netns exec "$NSA" python3 -c "
import socket, sys
s = socket.socket(); s.settimeout(3)
try: s.connect(('$HB', 9))
except ConnectionRefusedError: sys.exit(0)
except OSError: sys.exit(1)
"
}
reachable || fail "A cannot reach B over the veth pair"
echo "hosts: $NSA $HA <-> $NSB $HB over veth $VA/$VB"

# ssh stand-in: OpenMPI calls `AGENT [options] HOST COMMAND...`; like ssh, join COMMAND and run it
# with a shell, here inside HOST's namespace.
AGENT=$WORK/netns-rsh
cat > "$AGENT" <<EOF
#!/bin/sh
while [ \$# -gt 0 ]; do case \$1 in -*) shift ;; *) break ;; esac; done
host=\$1; shift
case \$host in
  $HA) ns=$NSA ;;
  $HB) ns=$NSB ;;
  *) echo "netns-rsh: unknown host \$host" >&2; exit 255 ;;
esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
EOF
chmod +x "$AGENT"

# Extra batch flags: the step watchdog's timeout, where this gptj has it.
WATCHDOG=()
"$GPTJ" batch --help 2>/dev/null | grep -q -- --step-timeout && WATCHDOG=(--step-timeout 10)

# two_hosts ARGS...: gptj on rank 0 in A, rank 1 in B, over TCP on the veth only. Call it in the
# background: `exec` + setsid make the background PID mpirun's own and a process group of its own,
# so a stuck job can be killed as a whole.
# OOB keepalive (mpirun <-> remote orted): with OpenMPI's defaults (300 s idle, 9 probes 20 s apart)
# mpirun notices a dead link only after ~8 min — or never, once it has queued the "kill your ranks"
# message for the unreachable daemon (then TCP retransmits for ~15 min) — so even after gptj's
# watchdog ends rank 0, mpirun itself would hang. 2 s idle + 3 probes 1 s apart: mpirun declares
# the remote daemon lost ~5 s after the link goes, and ends the job. cluster/README.md says the same.
two_hosts() {
  exec setsid ip netns exec "$NSA" mpirun -np 2 --host $HA:1,$HB:1 \
    --mca plm_rsh_agent "$AGENT" --mca plm_rsh_no_tree_spawn 1 \
    --mca pml ob1 --mca btl tcp,self \
    --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
    --mca oob_tcp_keepalive_time 2 --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 3 \
    "$GPTJ" batch --model "$MODEL" "${WATCHDOG[@]}" "${EXTRA_ARGS[@]}" "$@"
}
EXTRA_ARGS=()  # set for the data-parallel part (5.)
run_bounded() {  # run_bounded SECONDS ARGS...: two_hosts, killed (whole group) after SECONDS
  local limit=$1 t=0
  shift
  two_hosts "$@" &
  JOB_PID=$!
  while kill -0 $JOB_PID 2>/dev/null && [ $t -lt $((limit * 10)) ]; do sleep 0.1; t=$((t + 1)); done
  if kill -0 $JOB_PID 2>/dev/null; then
    kill -9 -- -$JOB_PID 2>/dev/null
    kill_ns_procs
    wait $JOB_PID 2>/dev/null
    JOB_PID=""
    return 124
  fi
  wait $JOB_PID
  local code=$?
  JOB_PID=""
  return $code
}

verify() {  # verify OUT [partial]: valid lines, golden tokens; without "partial": ids 0..N-1 once each
  python3 - "$1" "$GOLDEN" $N "${2:-}" <<'PY'
import json, sys
out, greedy, n, partial = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "partial"
golden = [r["new_tokens"] for r in json.load(open(greedy))["results"]]
lines = [json.loads(l) for l in open(out)]
ids = [d["id"] for d in lines]
for d in lines:
    assert d.get("tokens") == golden[d["id"] % 4], f"FAIL {out}: id {d['id']} differs from golden: {d}"
assert len(set(ids)) == len(ids), f"FAIL {out}: duplicated ids"
if not partial:
    assert sorted(ids) == list(range(n)), f"FAIL {out}: {len(ids)} lines, {len(set(ids))} distinct, want 0..{n-1}"
print(f"ok {out}: {len(ids)} lines, each id once, all golden" + ("" if partial else f", all {n} ids"))
PY
}

# ---- 1. golden across the two hosts ----
prompts_jsonl tiny-gptj-a 32 > "$WORK/golden_in.jsonl"
start=$SECONDS
run_bounded 90 --input "$WORK/golden_in.jsonl" --output "$WORK/golden_out.jsonl" 2> "$WORK/golden.err"
code=$?
[ $code -eq 0 ] || { cat "$WORK/golden.err"; fail "TP 2 across two hosts: exit $code"; }
check greedy "$WORK/golden_out.jsonl" "$GOLDEN" || fail "two-host output differs from golden"
echo "golden TP 2 across $HA and $HB: ok in $((SECONDS - start)) s"

# ---- the fault tests' input: N lines over the 4 golden prompts ----
python3 - "$DATA" $N > "$WORK/in.jsonl" <<'PY'
import json, sys
prompts = json.load(open(sys.argv[1] + "/gptj_prompts.json"))["models"]["tiny-gptj-a"]["prompts"]
for i in range(int(sys.argv[2])):
    print(json.dumps({"id": i, "tokens": prompts[i % 4], "max_new_tokens": 32}))
PY

FAILED=()
# fault NAME COMMAND MESSAGE: start the long job, wait for ≥ 10 lines, run COMMAND (the fault); the
# job must end within FAULT_LIMIT s, non-zero, its stderr matching MESSAGE (grep -E); finished lines
# stay; --resume completes every id exactly once.
fault() {
  local name=$1 inject=$2 message=$3
  local out=$WORK/$name.jsonl err=$WORK/$name.err
  echo "== fault $name"
  two_hosts --input "$WORK/in.jsonl" --output "$out" --max-batch 2 2> "$err" &
  JOB_PID=$!
  for _ in $(seq 600); do  # ≤ 60 s for the first 10 lines
    [ -f "$out" ] && [ "$(wc -l < "$out")" -ge 10 ] && break
    kill -0 $JOB_PID 2>/dev/null || break
    sleep 0.1
  done
  local before
  before=$(wc -l < "$out" 2>/dev/null || echo 0)
  [ "$before" -ge 10 ] && [ "$before" -lt $N ] || { cat "$err"; fail "$name: $before lines before the fault (job ended early?)"; }
  eval "$inject" || fail "$name: could not inject the fault"
  local t0=$SECONDS ended=0
  for _ in $(seq $((FAULT_LIMIT * 10))); do
    kill -0 $JOB_PID 2>/dev/null || { ended=1; break; }
    sleep 0.1
  done
  local took=$((SECONDS - t0)) code=0
  if [ $ended -eq 1 ]; then
    wait $JOB_PID; code=$?
    echo "$name: job ended $took s after the fault, exit $code, $before lines before the fault, $(wc -l < "$out") after"
  else
    echo "$name: job still running $FAULT_LIMIT s after the fault — killing it"
    kill -9 -- -$JOB_PID 2>/dev/null
    wait $JOB_PID 2>/dev/null
  fi
  JOB_PID=""
  echo "-- $name: the error (stderr lines matching '$message'):"
  grep -E "$message" "$err" | head -n 3 | sed 's/^/   | /'
  kill_ns_procs  # whatever a failed job left behind (e.g. a rank or orted cut off from mpirun)
  ip -n "$NSA" link set "$VA" up; ip -n "$NSB" link set "$VB" up
  local up=0  # the carrier and route come back within a moment; allow 5 tries
  for _ in 1 2 3 4 5; do reachable && { up=1; break; }; sleep 1; done
  [ $up -eq 1 ] || fail "$name: link not back up"

  [ $ended -eq 1 ] || { FAILED+=("$name: did not end within $FAULT_LIMIT s after the fault"); }
  [ $ended -eq 1 ] && [ $code -eq 0 ] && FAILED+=("$name: exit 0 after a fault")
  [ $ended -eq 1 ] && ! grep -qE "$message" "$err" && FAILED+=("$name: no error message matching '$message'")
  [ "$(wc -l < "$out")" -ge "$before" ] || FAILED+=("$name: finished lines lost")
  verify "$out" partial || FAILED+=("$name: output after the fault is not clean")

  start=$SECONDS
  run_bounded 120 --input "$WORK/in.jsonl" --output "$out" --resume 2> "$WORK/$name.resume.err"
  code=$?
  [ $code -eq 0 ] || { tail -n 5 "$WORK/$name.resume.err"; FAILED+=("$name: --resume exit $code"); return; }
  echo "$name: --resume done in $((SECONDS - start)) s: $(grep -o '[0-9]* lines written.*skipped as already done' "$WORK/$name.resume.err")"
  verify "$out" || FAILED+=("$name: after --resume not every id exactly once / golden")
}

remote_rank() {  # PID of the gptj rank running in B
  local q
  for q in $(ip netns pids "$NSB"); do [ "$(cat /proc/$q/comm 2>/dev/null)" = gptj ] && echo $q; done | head -n 1
}
# a: SIGKILL the rank running in B (the remote host): its orted reports it, mpirun ends the job.
fault kill_remote 'p=$(remote_rank); [ -n "$p" ] && echo "kill -9 remote rank pid $p" && kill -9 $p' \
  'rank 1 .*on node 10.77.0.2 exited on signal 9'
# b: the link goes down inside B (both ends lose carrier); packets are dropped silently, no RST.
# Ended by mpirun's OOB keepalive (see two_hosts) or gptj's step watchdog, whichever comes first.
fault link_down 'echo "ip link set $VB down (in $NSB)" && ip -n "$NSB" link set "$VB" down' \
  'lost communication with a remote daemon|did not complete within'
# c: the remote rank hangs (SIGSTOP): the link and every daemon are fine, so only gptj's own step
# watchdog (--step-timeout) can notice; rank 0 ends, mpirun kills the stopped rank.
fault stop_remote 'p=$(remote_rank); [ -n "$p" ] && echo "kill -STOP remote rank pid $p" && kill -STOP $p' \
  'rank [01] on .*did not complete within'

# ---- 5. data-parallel: one TP-1 replica per host (--tp 1): golden; then the remote replica hangs
# (SIGSTOP): only rank 0's replica link notices its silence; --resume completes the job. (Its
# step allowance is bounded with --max-step-tokens 128: tests/parallel/dp_faults_test.sh says why.)
EXTRA_ARGS=(--tp 1 --max-step-tokens 128)
start=$SECONDS
run_bounded 90 --input "$WORK/golden_in.jsonl" --output "$WORK/dp_golden_out.jsonl" 2> "$WORK/dp_golden.err"
code=$?
[ $code -eq 0 ] || { cat "$WORK/dp_golden.err"; fail "2 replicas on two hosts: exit $code"; }
check greedy "$WORK/dp_golden_out.jsonl" "$GOLDEN" || fail "two-host DP output differs from golden"
grep -q "replica 1 (ranks 1..1)" "$WORK/dp_golden.err" || fail "two-host DP: no line for replica 1"
echo "golden with 2 replicas (one per host): ok in $((SECONDS - start)) s"
fault stop_remote_replica 'p=$(remote_rank); [ -n "$p" ] && echo "kill -STOP remote replica pid $p" && kill -STOP $p' \
  'replica 1 \(leader rank 1 on .*\) sent nothing for|no word from rank 0'

if ((${#FAILED[@]})); then
  printf 'FAIL: %s\n' "${FAILED[@]}" >&2
  [ ${#WATCHDOG[@]} -eq 0 ] && echo "note: this gptj has no --step-timeout (watchdog not built in yet)" >&2
  exit 1
fi
echo PASS

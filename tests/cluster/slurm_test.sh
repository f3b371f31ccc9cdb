#!/usr/bin/env bash
# A REAL Slurm on this one machine (../shared/notes/slurm.md): munged, slurmctld and slurmd started
# from a temporary config of our own (unique ports, state/spool/log/pid files in a temp dir, our own
# munge key and socket, so nothing in /etc or /run is touched and a system Slurm/munge is left alone).
# Then the repository's cluster/slurm/batch-cpu.sbatch is submitted with `sbatch --wait` (2 tasks =
# TP 2, tiny-gptj-a, the 4 golden prompts, 32 new tokens) and its output must equal the golden greedy
# tokens; then the same with TP=1 (2 data-parallel replicas). Then cluster/slurm/serve.sbatch (CPU, TP 2) is stopped with scancel while a plain and a
# streamed request run: both finish, rank 0 drains, srun exits 0. And `srun --mpi=none -n 2 gptj`
# (no PMI) is refused instead of running as two unrelated single-rank jobs.
# The daemons are stopped by PID in an EXIT trap, on success and on failure.
# Skips (exit 77, "SKIP: reason"; ctest reports it as skipped) when not root, when Slurm/munge are
# not installed (scripts/setup.sh installs slurm-wlm and munge so CI really runs it), or where
# slurmd cannot run at all: no cgroup filesystem mounted under /sys/fs/cgroup (a container or
# chroot; slurmd refuses to start without one, whatever the proctrack/task plugins).
set -uo pipefail
source "$(dirname "$0")/../tools/common.sh" "$1" "$2"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SBATCH_SCRIPT=$REPO/cluster/slurm/batch-cpu.sbatch
MODEL=$DATA/tiny-gptj-a/model
GOLDEN=$DATA/tiny-gptj-a/expected/greedy.json

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to run slurmctld/slurmd (SlurmUser=root)"
export PATH=$PATH:/usr/sbin:/sbin  # the daemons live in sbin, which a non-login PATH may lack
for b in munged munge unmunge slurmctld slurmd sbatch sinfo squeue scancel srun ss; do
  command -v "$b" >/dev/null || skip "$b not found (apt-get install slurm-wlm munge iproute2; scripts/setup.sh does)"
done
id munge >/dev/null 2>&1 || skip "no munge user (munge package not installed properly)"
# slurmd needs a cgroup v2 filesystem at /sys/fs/cgroup, or cgroup v1 hierarchies below it.
awk '$2 ~ "^/sys/fs/cgroup(/|$)" && $3 ~ "^cgroup2?$" { found = 1 } END { exit !found }' /proc/mounts ||
  skip "no cgroup filesystem mounted on /sys/fs/cgroup (slurmd cannot start: a container or chroot without cgroups)"

T=$WORK/slurm
mkdir -p "$T"/{munge,ctld,spool,log,run,tmp,job}
# The munge user must reach its socket/key under WORK (mktemp makes it 0700) but nobody may write there.
chmod 755 "$WORK" "$T"
# munged wants its socket directory a+x and its key private: two directories.
mkdir -p "$T/munge-key"
chown munge:munge "$T/munge" "$T/munge-key"
chmod 755 "$T/munge"
chmod 700 "$T/munge-key"

PIDS=()  # daemons we started, stopped in this order (reverse start order) by the trap
cleanup() {
  local code=$?
  if [ -n "${SLURM_CONF:-}" ] && [ -n "${CTLD_PID:-}" ]; then
    # Jobs first, so no slurmstepd outlives its slurmd; bounded wait.
    timeout 5 scancel --full --quiet --user=root 2>/dev/null
    for _ in $(seq 20); do
      [ -z "$(timeout 2 squeue -h 2>/dev/null)" ] && break
      sleep 0.25
    done
  fi
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
  for _ in $(seq 20); do  # up to 5 s for a clean exit, then SIGKILL what is left
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.25
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  if [ $code -ne 0 ]; then  # show what the daemons said, to debug a failure from the CI log alone
    for f in "$T"/munge/*.log "$T"/log/* "$T"/job/*.out; do
      [ -f "$f" ] && { echo "---- $f (tail)"; tail -n 25 "$f"; }
    done
  fi
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
  exit $code
}
trap cleanup EXIT

# ---- munge: own key, socket, pid file (AuthInfo=socket=... points Slurm at it) ----
MUNGE_SOCKET=$T/munge/munge.socket
dd if=/dev/urandom of="$T/munge-key/munge.key" bs=1024 count=1 status=none
chown munge:munge "$T/munge-key/munge.key"
chmod 400 "$T/munge-key/munge.key"
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$T/munge-key/munge.key" \
  --pid-file="$T/munge/munged.pid" --log-file="$T/munge/munged.log" --seed-file="$T/munge-key/seed" \
  || fail "munged would not start: $(tail -n 2 "$T/munge/munged.log" 2>/dev/null)"
# munged daemonizes: its PID comes from its pid file.
for _ in $(seq 40); do [ -s "$T/munge/munged.pid" ] && break; sleep 0.1; done
MUNGED_PID=$(cat "$T/munge/munged.pid" 2>/dev/null) || fail "munged wrote no pid file"
PIDS+=("$MUNGED_PID")
munge -n --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET" >/dev/null \
  || fail "munge round trip failed"

# ---- slurm.conf: unique ports (a free pair in 20000-29999), everything under $T ----
port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
for _ in $(seq 50); do
  CTLD_PORT=$((20000 + RANDOM % 9990))
  port_free $CTLD_PORT && port_free $((CTLD_PORT + 1)) && break
done
HOST=$(hostname -s)
export SLURM_CONF=$T/slurm.conf
cat > "$SLURM_CONF" <<EOF
# Written by tests/cluster/slurm_test.sh; a one-node Slurm that lives only in $T.
ClusterName=gptjtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$T/ctld
SlurmdSpoolDir=$T/spool
TmpFS=$T/tmp
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
# CPUs=8 on a 2-core machine: config_overrides lets 2+ tasks run whatever the real core count.
SlurmdParameters=config_overrides
MailProg=/bin/true
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# ---- slurmctld, slurmd in the foreground (-D) as our children, so $! is the daemon's PID ----
slurmctld -D -i -f "$SLURM_CONF" > "$T/log/slurmctld.out" 2>&1 &
CTLD_PID=$!
PIDS+=("$CTLD_PID")
slurmd -D -f "$SLURM_CONF" > "$T/log/slurmd.out" 2>&1 &
PIDS+=("$!")
state=""
for _ in $(seq 60); do  # the node is idle ~1 s after start; give it 30 s
  state=$(timeout 3 sinfo -h -N -o %T 2>/dev/null | head -n 1)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || { cat "$T"/log/*.out; fail "slurm node not idle after 30 s (state '$state')"; }
echo "slurm up: node $HOST idle, slurmctld port $CTLD_PORT; srun --mpi=list: $(srun --mpi=list 2>&1 | tr '\n' ' ')"

# ---- the job: the repository's sbatch script as users submit it ----
prompts_jsonl tiny-gptj-a 32 > "$T/job/in.jsonl"
start=$SECONDS
# Environment in, as the script documents (sbatch exports the caller's environment by default).
# --ntasks=2 on the command line overrides the script's #SBATCH line: TP 2.
MODEL=$MODEL INPUT=$T/job/in.jsonl OUTPUT=$T/job/out.jsonl GPTJ=$GPTJ \
  timeout -k 5 120 sbatch --wait --ntasks=2 --time=5 --chdir="$T/job" \
  --output="$T/job/slurm-%j.out" "$SBATCH_SCRIPT" > "$T/job/sbatch.out" 2>&1
code=$?
cat "$T/job/sbatch.out"
echo "sbatch --wait returned $code after $((SECONDS - start)) s"
echo "---- job log"
cat "$T"/job/slurm-*.out
[ $code -eq 0 ] || fail "the sbatch job failed (exit $code)"
grep -q "2 tasks (TP 2)" "$T"/job/slurm-*.out || fail "the job did not run 2 tasks"
grep -q "exit 0" "$T"/job/slurm-*.out || fail "srun did not exit 0"
check greedy "$T/job/out.jsonl" "$GOLDEN" || fail "output differs from the golden greedy tokens"

# ---- the same script as 2 data-parallel replicas (TP=1): same tokens, a summary line per replica ----
rm -f "$T/job/out_dp.jsonl" "$T"/job/dp-*.out
TP=1 MODEL=$MODEL INPUT=$T/job/in.jsonl OUTPUT=$T/job/out_dp.jsonl GPTJ=$GPTJ \
  timeout -k 5 120 sbatch --wait --ntasks=2 --time=5 --chdir="$T/job" \
  --output="$T/job/dp-%j.out" "$SBATCH_SCRIPT" > "$T/job/sbatch_dp.out" 2>&1
code=$?
cat "$T"/job/dp-*.out
[ $code -eq 0 ] || fail "the DP sbatch job failed (exit $code)"
grep -q "2 tasks (TP 1)" "$T"/job/dp-*.out || fail "the DP job did not run 2 tasks at TP 1"
grep -q "replica 1 (ranks 1..1)" "$T"/job/dp-*.out || fail "the DP job has no line for replica 1"
check greedy "$T/job/out_dp.jsonl" "$GOLDEN" || fail "DP output differs from the golden greedy tokens"

# ---- srun without a PMI starts 2 unrelated processes: gptj refuses, naming --mpi=pmix ----
timeout -k 5 60 srun --mpi=none -n 2 "$GPTJ" tokenize --model "$MODEL" --text hi > "$T/job/nopmi.out" 2>&1 &&
  fail "srun --mpi=none -n 2 gptj: exit 0 (want a refusal): $(cat "$T/job/nopmi.out")"
grep -q "srun started 2 tasks without a PMI.*--mpi=pmix" "$T/job/nopmi.out" ||
  fail "srun --mpi=none -n 2 gptj: no clear refusal: $(cat "$T/job/nopmi.out")"

# ---- 2. cluster/slurm/serve.sbatch stopped with scancel (KillWait=5 here, so DRAIN_TIMEOUT=2):
# every task gets SIGTERM; requests in flight finish (200; the stream ends with [DONE]) ----
SERVE_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MODEL=$MODEL GPTJ=$GPTJ BACKEND=cpu HOST=127.0.0.1 PORT=$SERVE_PORT DRAIN_TIMEOUT=2 \
  sbatch --parsable --ntasks=2 --cpus-per-task=1 --gpus-per-task=0 --time=5 --chdir="$T/job" \
  --output="$T/job/serve-%j.out" "$REPO/cluster/slurm/serve.sbatch" > "$T/job/serve.id" 2>&1 ||
  fail "sbatch serve.sbatch: $(cat "$T/job/serve.id")"
SERVE_JOB=$(cut -d';' -f1 "$T/job/serve.id")
for _ in $(seq 120); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$SERVE_PORT/health")" = 200 ] && break
  sleep 0.5
done
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$SERVE_PORT/health")" = 200 ] ||
  fail "serve.sbatch job $SERVE_JOB did not answer /health within 60 s"
PYTHONPATH=$REPO/tests/server python3 - "$SERVE_PORT" "$SERVE_JOB" <<'PY' || fail "requests in flight at scancel"
import subprocess, sys
from serverlib import start_plain_and_stream
port, job = int(sys.argv[1]), sys.argv[2]
finish = start_plain_and_stream(port, 150)
subprocess.run(["scancel", job], check=True)
finish("in flight at scancel", join_s=60)
print("scancel: the requests in flight finished")
PY
for _ in $(seq 60); do [ -z "$(timeout 2 squeue -h -j "$SERVE_JOB" 2>/dev/null)" ] && break; sleep 0.5; done
echo "---- serve job log"
cat "$T"/job/serve-*.out
grep -q "gptj serve: stopped" "$T"/job/serve-*.out || fail "rank 0 did not finish its drain after scancel"
grep -q "gptj serve: exit 0" "$T"/job/serve-*.out || fail "srun did not exit 0 after scancel"
echo PASS

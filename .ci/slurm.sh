#!/usr/bin/env bash
# CI on a real SLURM: the workflow through snakemake-executor-plugin-slurm on a one-node Slurm 22.05
# cluster started here (Debian's munge + slurmctld + slurmd, no systemd, run as root).
#
#   .ci/slurm.sh            # ~1.5-2.5 minutes on 2 cores; exits non-zero on any failed check
#   KEEP=1 .ci/slurm.sh     # keep the temporary directory (logs, results, slurm.conf) for inspection
#
# It runs `--profile profiles/slurm --workflow-profile profiles/slurm-ci`, i.e. the real cluster profile
# with CI overrides, on a small grid written here (digits, small_cnn, AT + PART(s=1) with 20 epochs,
# 1 seed, natural + PGD-20), in a temporary work directory, and checks:
#   1. every train and evaluate job went through sbatch (a SLURM job id and log for each), every other
#      rule ran locally on the submit host (downloads, metrics and tables must not need a compute node);
#   2. `scancel` of the PART training after epoch 2: the job ends CANCELLED, checkpoint.pt survives
#      (only model.pt and run.json are declared outputs, and those are what Snakemake deletes), the
#      Snakemake retry resumes "after epoch k" with k the last epoch completed before the kill;
#   3. preemption of that retry by a job in a higher-priority partition (PreemptMode=REQUEUE): SLURM
#      requeues the same job id (the profile's slurm-requeue), no retry is used, and it resumes again
#      from its last completed epoch and trains only the remaining epochs, none twice;
#   4. the tables have the shape of a local run of the same grid and, since CPU training is
#      bit-identical across a resume, the very same numbers;
#   5. nothing is left half-written in results/ (no temporary files, no checkpoint next to a model).
# The cluster (slurmd, slurmctld, munged) is stopped on every exit path by the EXIT trap, by pid.
#
# Isolation: a private munged socket, random free ports and a temporary state directory. Only
# /etc/slurm/slurm.conf is shared (the plugin's nested `srun` drops SLURM_CONF from its environment, so
# the config has to be at the default path): the script refuses to overwrite one it did not write, and
# removes its own at exit. A lock serialises concurrent runs on one machine.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/.venv/bin"
START=$SECONDS
say() { printf '[slurm-ci %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { say "FAIL: $*"; exit 1; }

CONF=/etc/slurm/slurm.conf
MARK="# written by part-repro .ci/slurm.sh"
TARGET_EPOCHS=20  # the scancel target trains long enough (~1 s/epoch) to be cancelled after epoch 2

# ---------------------------------------------------------------- prerequisites
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null ||
   ! command -v munged >/dev/null; then
  say "installing munge + slurmctld + slurmd + slurm-client (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge slurmctld slurmd slurm-client >/dev/null
fi
[ -x "$BIN/snakemake" ] || make -C "$ROOT" setup
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create  # the package normally creates it

exec 9>"${TMPDIR:-/tmp}/part-slurm-ci.lock"
flock -w 900 9 || die "another .ci/slurm.sh still holds the lock"
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  die "$CONF exists and was not written by this script: refusing to touch a real cluster's config"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/part-slurm-ci.XXXXXX")"
chmod 0755 "$WORK"  # munged runs as user munge and must reach its socket directory
SMK_PID="" LOCAL_PID=""  # process groups (setsid) of the two snakemake runs

# ---------------------------------------------------------------- teardown (always)
alive() {  # a zombie counts as gone: in some containers pid 1 reaps orphans late
  kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]
}
stop_pidfile() {  # stop_pidfile NAME FILE: TERM the daemon we started (by its pid), KILL it after 10 s
  local name=$1 file=$2 pid
  [ -s "$file" ] || return 0
  pid="$(cat "$file")"
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do alive "$pid" || { say "stopped $name (pid $pid)"; return 0; }; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  say "killed $name (pid $pid) after 10 s"
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  # Both snakemake runs lead their own process group (setsid), so a group signal reaches their job
  # processes too. A background job of a non-interactive shell ignores SIGINT, hence SIGTERM: Snakemake
  # then submits nothing new but waits for its running jobs, which we cancel (every job on this private
  # cluster is ours, retries included); whatever still runs after 20 s is killed.
  local pg
  for pg in $SMK_PID $LOCAL_PID; do
    kill -0 -- "-$pg" 2>/dev/null && { say "stopping snakemake (process group $pg)"; kill -TERM -- "-$pg"; }
  done
  for _ in $(seq 20); do
    local busy=""
    if [ -s "$WORK/slurm/slurmctld.pid" ] && alive "$(cat "$WORK/slurm/slurmctld.pid")"; then
      busy="$(squeue -h -t PENDING,RUNNING,CONFIGURING,REQUEUED -o %i 2>/dev/null | tr '\n' ' ')"
      # shellcheck disable=SC2086
      [ -n "${busy// }" ] && { say "cancelling jobs still on the CI cluster: $busy"; scancel $busy; }
    fi
    for pg in $SMK_PID $LOCAL_PID; do kill -0 -- "-$pg" 2>/dev/null && busy+=" $pg"; done
    [ -n "${busy// }" ] || break
    sleep 1
  done
  for pg in $SMK_PID $LOCAL_PID; do
    kill -0 -- "-$pg" 2>/dev/null && { say "killing process group $pg"; kill -KILL -- "-$pg"; }
  done
  stop_pidfile slurmd "$WORK/slurm/slurmd.pid"
  stop_pidfile slurmctld "$WORK/slurm/slurmctld.pid"
  stop_pidfile munged "$WORK/munge/munged.pid"
  if [ -e "$CONF" ] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
  if [ "$rc" -ne 0 ]; then
    for f in "$WORK/snakemake.log" "$WORK/slurm/slurmctld.log" "$WORK/slurm/slurmd.log"; do
      [ -s "$f" ] && { say "--- last lines of $f"; tail -n 40 "$f"; }
    done
  fi
  if [ -n "${KEEP:-}" ] || [ "$rc" -ne 0 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
  say "$([ "$rc" -eq 0 ] && echo PASSED || echo "FAILED (exit $rc)") after $((SECONDS - START)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- a one-node cluster
mkdir -p "$WORK/slurm/state" "$WORK/slurm/spool"
install -d -o munge -g munge -m 0755 "$WORK/munge"
runuser -u munge -- /usr/sbin/munged --socket="$WORK/munge/munge.socket" --pid-file="$WORK/munge/munged.pid" \
  --log-file="$WORK/munge/munged.log" --seed-file="$WORK/munge/munged.seed"
munge -S "$WORK/munge/munge.socket" -n | unmunge -S "$WORK/munge/munge.socket" >/dev/null ||
  die "munge does not round-trip a credential"

read -r CTLD_PORT SLURMD_PORT < <("$BIN/python" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
NCPU="$(nproc)"
MEM_MB=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) * 3 / 4 / 1024))  # 3/4 of the machine
mkdir -p "$(dirname "$CONF")"
cat >"$CONF" <<EOF
$MARK ($WORK); removed when it exits.
ClusterName=partci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$WORK/munge/munge.socket
StateSaveLocation=$WORK/slurm/state
SlurmdSpoolDir=$WORK/slurm/spool
SlurmctldPidFile=$WORK/slurm/slurmctld.pid
SlurmdPidFile=$WORK/slurm/slurmd.pid
SlurmctldLogFile=$WORK/slurm/slurmctld.log
SlurmdLogFile=$WORK/slurm/slurmd.log
# No cgroups in a container: track processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Several 1-CPU jobs share the node (select/linear would give each job the whole node).
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# No slurmdbd: the plugin polls squeue, which shows finished jobs for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MpiDefault=none
# Preemption as on shared GPU clusters: a job in 'urgent' requeues the jobs of 'ci' it needs room from.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=localhost CPUs=$NCPU RealMemory=$MEM_MB State=UNKNOWN
PartitionName=ci Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=10
EOF
slurmctld
slurmd
for _ in $(seq 100); do [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break; sleep 0.3; done
[ "$(sinfo -h -o %t)" = idle ] || die "the node did not become idle: $(sinfo 2>&1)"
say "cluster up: $(sinfo -h -o '%P %D %t %c CPUs %m MB') (slurmctld :$CTLD_PORT, slurmd :$SLURMD_PORT)"

# ---------------------------------------------------------------- the CI grid
# digits ship with scikit-learn: no download. 2 variants x 1 seed, natural + PGD-20 on the full test set.
mkdir -p "$WORK/wf" "$WORK/local"
cat >"$WORK/ci.yaml" <<EOF
data: {raw_dir: data/raw, prepared_dir: data/prepared, mirror: null}
results_dir: results
datasets:
  digits: {arch: small_cnn}
variants:
  at:      {label: "AT", family: AT, run: {method: at, epochs: 4, optim: {lr_milestones: [3]}}}
  part_s1: {label: "PART (s = 1)", family: AT,
            run: {method: part, mask: {refresh_every: 1}, epochs: $TARGET_EPOCHS, warmup_epochs: 2, optim: {lr_milestones: [15]}}}
seeds: [0]
run: {device: cpu}
evaluation: {attacks: [natural, pgd20], batch_size: 500, n_examples: null, aa_n_examples: null}
resources:
  train:    {gpu: 0, cpus_per_gpu: 1, mem_mb: 1000, runtime: 10}
  evaluate: {gpu: 0, cpus_per_gpu: 1, mem_mb: 1000, runtime: 10}
EOF
TRAIN_RUNS=(digits_small_cnn_at_0 digits_small_cnn_part_s1_0)
EVAL_RUNS=(digits_small_cnn_at_0_natural digits_small_cnn_at_0_pgd20
           digits_small_cnn_part_s1_0_natural digits_small_cnn_part_s1_0_pgd20)
TARGET=digits_small_cnn_part_s1_0
TARGET_LOG="$WORK/wf/logs/train/digits/small_cnn/part_s1/seed0.log"
TARGET_RUN="$WORK/wf/results/digits/small_cnn/part_s1/seed0"
SMK=("$BIN/snakemake" --snakefile "$ROOT/Snakefile" --configfile "$WORK/ci.yaml")

say "submitting the CI grid through SLURM (profiles/slurm + profiles/slurm-ci)"
setsid "${SMK[@]}" --directory "$WORK/wf" --profile "$ROOT/profiles/slurm" \
  --workflow-profile "$ROOT/profiles/slurm-ci" >"$WORK/snakemake.log" 2>&1 &
SMK_PID=$!

wait_until() {  # wait_until SECONDS WHAT CMD...: poll CMD every 0.2 s while snakemake runs
  local limit=$1 what=$2
  shift 2
  for _ in $(seq $((limit * 5))); do
    "$@" && return 0
    kill -0 "$SMK_PID" 2>/dev/null || die "snakemake exited while waiting for $what"
    sleep 0.2
  done
  die "no $what within $limit s"
}
log_has() { grep -Eq "$1" "$TARGET_LOG" 2>/dev/null; }
last_epoch() { grep -Eo "epoch +[0-9]+/$TARGET_EPOCHS " "$TARGET_LOG" | tail -n 1 | grep -Eo '[0-9]+' | head -n 1; }
target_job() { squeue -h -t RUNNING -o '%i %k' | awk -v c="rule_train_wildcards_$TARGET" '$2 == c {print $1}'; }
job_state() { squeue -h --states=all -j "$1" -o %T 2>/dev/null; }
stopped() { case "$(job_state "$1")" in RUNNING|COMPLETING|"") return 1 ;; esac; }

# ---------------------------------------------------------------- 1. scancel the target mid-training
wait_until 300 "epoch 2 of $TARGET" log_has "epoch +2/$TARGET_EPOCHS "
VICTIM="$(target_job)"
[ -n "$VICTIM" ] || die "no running SLURM job for $TARGET: $(squeue 2>&1)"
scancel "$VICTIM"
wait_until 30 "end of job $VICTIM" stopped "$VICTIM"
# Read now: the retry deletes this log (Snakemake clears a job's log before each attempt).
LAST1="$(last_epoch)"
say "scancel $VICTIM ($TARGET): $(job_state "$VICTIM") after epoch $LAST1/$TARGET_EPOCHS"
[ "$(job_state "$VICTIM")" = CANCELLED ] || die "job $VICTIM ended as '$(job_state "$VICTIM")', expected CANCELLED"
[ -f "$TARGET_RUN/checkpoint.pt" ] || die "checkpoint.pt vanished after the cancel"
[ ! -e "$TARGET_RUN/model.pt" ] || die "model.pt exists although training was cancelled"

# The local reference runs beside the rest (the cluster mostly waits on polls); 1 core for it, 1 for SLURM.
say "local reference run of the same grid (snakemake --cores 1, in the background)"
setsid "${SMK[@]}" --directory "$WORK/local" --cores 1 >"$WORK/local.log" 2>&1 &
LOCAL_PID=$!

# ---------------------------------------------------------------- 2. preempt the resumed target
wait_until 300 "resumption of $TARGET" log_has "resuming .* after epoch"
RESUME1="$(grep -Eo 'resuming .* after epoch [0-9]+' "$TARGET_LOG")"
K1="${RESUME1##* }"
say "retry of $TARGET: $(grep -Eo 'resuming .*' "$TARGET_LOG")"
wait_until 120 "epoch $((K1 + 2)) of the retry" log_has "epoch +$((K1 + 2))/$TARGET_EPOCHS "
RETRY="$(target_job)"
[ -n "$RETRY" ] || die "no running SLURM job for the retry of $TARGET"
PREEMPTOR="$(sbatch --parsable -p urgent -J preemptor -c "$NCPU" --mem 100 -o /dev/null --wrap 'sleep 3')"
wait_until 30 "preemption of job $RETRY" stopped "$RETRY"
LAST2="$(last_epoch)"
say "job $PREEMPTOR (partition urgent, all CPUs) preempted $RETRY: $(job_state "$RETRY") after epoch $LAST2/$TARGET_EPOCHS"
# Slurm makes a requeued job wait ~2 minutes (BeginTime) before it may start again; harmless on a real
# cluster, but CI need not sit through it (an evaluation running at that moment was requeued too).
for job in $(squeue -h -t PENDING -o %i); do
  scontrol update JobId="$job" StartTime=now || say "could not clear the start delay of job $job"
done

wait "$LOCAL_PID" || { tail -n 40 "$WORK/local.log"; die "the local reference run failed"; }
LOCAL_PID=""
say "local reference run finished"
wait "$SMK_PID" && SMK_RC=0 || SMK_RC=$?
SMK_PID=""
[ "$SMK_RC" -eq 0 ] || die "snakemake on SLURM exited with $SMK_RC"
say "snakemake on SLURM finished"

# ---------------------------------------------------------------- checks
say "jobs on the CI cluster (squeue --states=all; no accounting database, so no sacct):"
squeue -h --states=all -o '%.6i %.10T %.8M  %k' | sort -n | sed 's/^/    /'
grep -E "has been submitted with SLURM jobid" "$WORK/snakemake.log" | sed 's/^/    /'

scontrol show job "$RETRY" | grep -Eo 'JobId=[0-9]+|JobState=[A-Z]+|Restarts=[0-9]+|RunTime=[0-9:]+' | tr '\n' ' ' |
  sed 's/^/    scontrol: /'; echo
"$BIN/python" - "$WORK" "$TARGET" "$TARGET_EPOCHS" "$VICTIM" "$LAST1" "$K1" "$RETRY" "$LAST2" "$PREEMPTOR" \
  "${TRAIN_RUNS[*]}" "${EVAL_RUNS[*]}" <<'PY'
"""The assertions that need more than grep; each failure names what differed."""
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

work, target, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
victim, last1, k1, retry, last2, preemptor = sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), *sys.argv[7:10]
last2 = int(last2)
train_runs, eval_runs = set(sys.argv[10].split()), set(sys.argv[11].split())
log = (work / "snakemake.log").read_text()
failures = []


def check(ok, msg):
    print(("    ok    " if ok else "    FAIL  ") + msg)
    if not ok:
        failures.append(msg)


# 1. Every train/evaluate job through sbatch, everything else local.
submitted = defaultdict(lambda: defaultdict(list))  # rule -> wildcards -> [slurm job ids]
for m in re.finditer(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/(\w+)/\1\.log\)", log):
    submitted[m[2]][m[3]].append(m[1])
check(set(submitted) == {"train", "evaluate"}, f"only train and evaluate were submitted: {sorted(submitted)}")
check(set(submitted["train"]) == train_runs, f"a SLURM job for every training run: {dict(submitted['train'])}")
check(set(submitted["evaluate"]) == eval_runs, f"a SLURM job for every evaluation: {dict(submitted['evaluate'])}")
check(submitted["train"][target] == [victim, retry],
      f"the cancelled job {victim} was resubmitted once, as {retry}: {submitted['train'][target]}")
check(all(len(ids) == 1 for run, ids in submitted["train"].items() if run != target)
      and all(len(ids) == 1 for ids in submitted["evaluate"].values()), "no other job needed a retry")
# (The failed job's SLURM log, echoed by show-failed-logs, contains "localrule train:" from the
# Snakemake inside the job; hence a superset check here and the sbatch check above for train/evaluate.)
local = set(re.findall(r"^localrule (\w+):", log, re.M))
expected_local = {"prepare_dataset", "metrics", "aggregate", "figure_tradeoff", "figure_gallery", "results_readme"}
check(expected_local <= local, f"downloads, metrics, tables and figures ran locally: {sorted(expected_local & local)}")
logs = [work / "wf/.snakemake/slurm_logs" / f"rule_{rule}" / run / f"{i}.log"
        for rule, runs in submitted.items() for run, ids in runs.items() for i in ids]
check(all(p.is_file() for p in logs), f"a SLURM log named by its job id for each of the {len(logs)} jobs")
states = dict(line.split("|") for line in subprocess.run(
    ["squeue", "-h", "--states=all", "-o", "%i|%T"], capture_output=True, text=True, check=True).stdout.split())
all_ids = [i for runs in submitted.values() for ids in runs.values() for i in ids] + [preemptor]
check(all(states.get(i) == ("CANCELLED" if i == victim else "COMPLETED") for i in all_ids),
      f"squeue: {victim} CANCELLED, every other job COMPLETED: { {i: states.get(i) for i in all_ids} }")

# 2. Interrupted training resumes after its last completed epoch, never from scratch. Snakemake clears a
# job's log before each attempt (and a requeued job is a new attempt of the same sbatch script), so the
# final log is the last attempt's; the script read the epochs reached at each kill before that.
check(1 <= last1 and k1 in (last1, last1 + 1),
      f"scancel after epoch {last1}: the Snakemake retry resumed after epoch {k1} (a kill inside the epoch "
      f"loses that epoch only; one more is possible if the kill fell between checkpoint and log line)")
restarts = re.search(r"Restarts=(\d+)", subprocess.run(["scontrol", "show", "job", retry], capture_output=True,
                                                       text=True).stdout)
check(restarts is not None and int(restarts[1]) == 1,
      f"preemption of {retry}: SLURM requeued the same job (Restarts={restarts and restarts[1]}), no retry used")
tlog = (work / "wf/logs/train/digits/small_cnn/part_s1/seed0.log").read_text()
resumed = re.findall(rf"resuming \S+ after epoch (\d+)/{epochs}", tlog)
k2 = int(resumed[-1]) if resumed else None
check(len(resumed) == 1 and k2 in (last2, last2 + 1) and k2 > k1,
      f"preempted after epoch {last2}: the requeued job resumed after epoch {k2}")
if resumed:
    after = [int(e) for e in re.findall(rf"epoch +(\d+)/{epochs} ", tlog)]
    check(after == list(range(k2 + 1, epochs + 1)),
          f"the last attempt trained only epochs {k2 + 1}..{epochs}, none twice: {after[:2]}...{after[-2:]}")

# 3. Tables: the shape (and, CPU training being bit-identical across a resume, the values) of a local run.
for name in ("per_seed.csv", "summary.csv", "main.csv"):
    got, ref = (pd.read_csv(work / d / "results/tables" / name) for d in ("wf", "local"))
    check(list(got.columns) == list(ref.columns) and got.shape == ref.shape,
          f"{name}: shape {got.shape} and columns as the local run ({ref.shape})")
    drop = [c for c in got.columns if "second" in c or "wall" in c]  # timings legitimately differ
    same = got.drop(columns=drop).equals(ref.drop(columns=drop))
    check(same, f"{name}: the same numbers as the local run")
main = pd.read_csv(work / "wf/results/tables/main.csv")
cols = [c for c in main.columns if c.endswith("_mean")]
check(cols == ["natural_mean", "pgd20_mean", "worst_case_mean"] and list(main["method"]) == ["AT", "PART (s = 1)"],
      f"main.csv: rows AT, PART (s = 1) x columns natural, PGD-20, worst case: {list(main['method'])} x {cols}")

# 4. Nothing half-written.
results = work / "wf/results"
tmp = sorted(str(p.relative_to(results)) for p in results.rglob("*.tmp"))
check(not tmp, f"no temporary files left in results/: {tmp}")
stale = sorted(str(p.relative_to(results)) for p in results.rglob("checkpoint.pt"))
check(not stale, f"no checkpoint.pt left next to a finished model: {stale}")

sys.exit(1 if failures else 0)
PY

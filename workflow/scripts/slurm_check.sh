#!/usr/bin/env bash
# Prove the SLURM profile on a real SLURM: install slurm-wlm + munge, start a one-node cluster on
# localhost, run the smoke pipeline through workflow/profiles/slurm (every job goes through sbatch)
# and again locally, require byte-identical outputs, and stop the daemons (also on failure).
#   workflow/scripts/slurm_check.sh [WORKDIR]       (root + apt-get; ~5 min on 2 cores)
# The overrides below only fit the profile to this toy node (this machine's CPUs, no accounting
# database): squeue for status (no slurmdbd, so no sacct), fast polling, one thread per job (as
# the local run's rules give; the profile's set-threads would give other last digits), small
# memory requests. The SLURM run normally takes ~4 min; it is stopped at 15.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/workflow/scripts"
work="${1:-$(mktemp -d /tmp/fgsd-slurm-check.XXXXXX)}"
mkdir -p "$work"
cpus=$(getconf _NPROCESSORS_ONLN)  # the toy node has them all; jobs are capped to it

"$here/slurm_local.sh" install
trap '"$here/slurm_local.sh" stop' EXIT
"$here/slurm_local.sh" start

copy_tree() {  # the checkout's files as git sees them (tracked + untracked, not ignored ones)
    mkdir -p "$1"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf -) |
        tar -xf - -C "$1"
}
copy_tree "$work/local"
copy_tree "$work/slurm"

echo "== local run (reference)"
(cd "$work/local" && snakemake --cores "$cpus" --configfile config/smoke.yaml --quiet rules) > "$work/local.log" 2>&1 ||
    { tail -n 40 "$work/local.log"; exit 1; }

echo "== SLURM run through workflow/profiles/slurm"
start=$(date +%s)
(cd "$work/slurm" && timeout -k 30 900 snakemake --workflow-profile workflow/profiles/slurm --configfile config/smoke.yaml \
    --slurm-status-command squeue --slurm-init-seconds-before-status-checks 2 --seconds-between-status-checks 2 \
    --max-threads 1 --latency-wait 5 --default-resources mem_mb=1000 runtime=30 --set-resources train:mem_mb=2000) \
    > "$work/slurm.log" 2>&1 || { tail -n 60 "$work/slurm.log"; exit 1; }
echo "SLURM run: $(( $(date +%s) - start )) s"

grep -o "has been submitted with SLURM jobid [0-9]*" "$work/slurm.log" | awk '{print $NF}' | sort -n > "$work/jobids.txt"
squeue -t all -h -o "%i %j %T" | sort -n > "$work/squeue.txt"
echo "jobs submitted through sbatch: $(wc -l < "$work/jobids.txt")"
echo "their states (squeue -t all):"
awk 'NR == FNR {state[$1] = $3; next} {print $1, (state[$1] ? state[$1] : "UNKNOWN")}' \
    "$work/squeue.txt" "$work/jobids.txt" > "$work/states.txt"
awk '{print $2}' "$work/states.txt" | sort | uniq -c
if [ "$(wc -l < "$work/jobids.txt")" -lt 20 ] || grep -qv " COMPLETED$" "$work/states.txt"; then
    echo "FAIL: expected >= 20 jobs submitted through sbatch, all COMPLETED" >&2
    exit 1
fi

echo "== comparing outputs"
python3 - "$work/local" "$work/slurm" <<'EOF'
import hashlib, sys
from pathlib import Path
local, slurm = (Path(p) / "results" for p in sys.argv[1:])
skip = {"logs", "benchmarks", ".state"}  # timings and log lines differ by nature
def files(root):
    return {p.relative_to(root): p for p in root.rglob("*") if p.is_file() and not skip & set(p.relative_to(root).parts)}
a, b = files(local), files(slurm)
sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
differ = sorted(str(k) for k in a.keys() & b.keys() if sha(a[k]) != sha(b[k]))
missing = sorted(str(k) for k in a.keys() ^ b.keys())
print(f"{len(a)} output files compared: {len(a) - len(differ)} byte-identical, {len(differ)} differ, {len(missing)} missing")
for name in differ + missing:
    print("  DIFFERS or MISSING:", name)
sys.exit(1 if differ or missing or not a else 0)
EOF
echo "PASS: the SLURM run equals the local run"

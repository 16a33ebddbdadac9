#!/bin/sh
# Run fuzz targets one at a time, each for SECONDS: first every input of
# its seed corpus (tests/fuzz/corpus/NAME, regression inputs included) and
# of DIR/corpus/NAME (what earlier runs found; new inputs go there), then
# new inputs until the time is up. Prints the executions of each; stops at
# the first crash or broken invariant, whose input is in DIR/artifacts/NAME.
# usage: tests/fuzz/run.sh DIR SECONDS [NAME...]   (from the top directory)
set -u
dir=$1
secs=$2
shift 2
names=${*:-$(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||')}

# Longest input worth trying: the target's largest meaningful message or
# sequence of steps.
max_len() {
    case $1 in
    shm_msg) echo 1024 ;;
    client_layout) echo 2048 ;;
    hakctl_status) echo 8192 ;;
    *) echo 4096 ;;
    esac
}

for n in $names; do
    mkdir -p "$dir/corpus/$n" "$dir/artifacts/$n" "$dir/logs"
    log=$dir/logs/$n.log
    # -close_fd_mask=2: the daemon logs every client it drops.
    if ! "$dir/fuzz_$n" -max_total_time="$secs" -max_len="$(max_len "$n")" -timeout=20 \
        -print_final_stats=1 -close_fd_mask=2 -artifact_prefix="$dir/artifacts/$n/" \
        "$dir/corpus/$n" "tests/fuzz/corpus/$n" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FAILED: fuzz_$n (whole log: $log; to repeat: $dir/fuzz_$n FILE)"
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    printf 'fuzz_%-14s %9s executions in %ss\n' "$n" "${execs:-?}" "$secs"
done

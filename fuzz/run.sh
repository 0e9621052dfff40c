#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time from a copy of the
# committed corpus, so that the tree stays clean; fails on any crash
# (docs/fuzzing.md). .ci/run calls it; it works the same on a laptop.
#
#   UPSLOT_FUZZ_SECONDS    seconds per target (default 20)
#   UPSLOT_FUZZ_TARGETS    which targets (default: all of them)
#   UPSLOT_FUZZ_JOBS       targets run at once (default: one per core)
#   UPSLOT_FUZZ_TOOLCHAIN  the nightly toolchain cargo-fuzz builds with (default nightly)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${UPSLOT_FUZZ_SECONDS:-20}
toolchain=${UPSLOT_FUZZ_TOOLCHAIN:-nightly}

started=$(date +%s)
since() { echo "$(($(date +%s) - $1)) s"; }

t=$(date +%s)
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$toolchain" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
echo "$(cargo fuzz --version), $(rustup run "$toolchain" rustc --version): ready in $(since "$t")"

# No sanitizer: upslot forbids unsafe code, and a panic is what the checks
# raise. Debug assertions on, for overflow checks. 16 codegen units: the build
# is most of this step's time, and 1 (cargo-fuzz's default) leaves a core idle.
t=$(date +%s)
cargo +"$toolchain" fuzz build --sanitizer none --debug-assertions --codegen-units 16
echo "build: $(since "$t")"

triple=$(rustup run "$toolchain" rustc -vV | sed -n 's/^host: //p')
bin=fuzz/target/$triple/release
targets=${UPSLOT_FUZZ_TARGETS:-$(cargo +"$toolchain" fuzz list)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One target per core at a time; each reports when its batch is done.
run() {
    local target=$1
    mkdir -p "$work/$target/corpus" "$work/$target/crashes"
    cp fuzz/corpus/"$target"/* "$work/$target/corpus/"
    local t result=ok
    t=$(date +%s)
    "$bin/$target" "$work/$target/corpus" \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$work/$target/crashes/" >"$work/$target/log" 2>&1 || result=CRASH
    echo "$result $(($(date +%s) - t))" >"$work/$target/result"
}

report() {
    local target=$1 result took execs rate corpus
    read -r result took < "$work/$target/result"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target/log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$target/log")
    corpus=$(find "$work/$target/corpus" -type f | wc -l)
    printf '%-12s %6s s %10s %8s %7s  %s\n' "$target" "$took" "${execs:-?}" "${rate:-?}" "$corpus" "$result"
    if [ "$result" != ok ]; then
        failed+=("$target")
        # Kept where a developer finds them (fuzz/artifacts is ignored by git).
        mkdir -p fuzz/artifacts/"$target"
        cp "$work/$target/crashes/"* fuzz/artifacts/"$target"/ 2>/dev/null || true
    fi
}

jobs=${UPSLOT_FUZZ_JOBS:-$(nproc)}
t=$(date +%s)
failed=()
batch=()
printf '\n%-12s %8s %10s %8s %7s  %s\n' target seconds executions exec/s corpus result
for target in $targets; do
    run "$target" &
    batch+=("$target")
    if [ ${#batch[@]} -ge "$jobs" ]; then
        wait
        for done_target in "${batch[@]}"; do report "$done_target"; done
        batch=()
    fi
done
wait
for done_target in "${batch[@]}"; do report "$done_target"; done
echo "runs: $(since "$t") ($jobs at a time)"

for target in "${failed[@]}"; do
    printf '\n==> %s crashed:\n' "$target"
    grep -v '^stat::\|^#[0-9]\|^INFO:' "$work/$target/log" | tail -40
    for input in "$work/$target/crashes/"*; do
        [ -f "$input" ] || continue
        printf -- '--- input %s (base64), kept in fuzz/artifacts/%s/:\n' "$(basename "$input")" "$target"
        base64 -w0 "$input"
        echo
    done
done
echo
echo "fuzzing: $(since "$started") in all"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]}; reproduce with: cargo +$toolchain fuzz run <target> fuzz/artifacts/<target>/<input>"
    exit 1
fi

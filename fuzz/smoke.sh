#!/usr/bin/env bash
# Fuzz smoke run, called by tests/run.sh: builds every cargo-fuzz target (AddressSanitizer when
# the toolchain can build it, else libFuzzer alone), replays each committed seed corpus, then
# runs each target for a fixed number of inputs from a fixed seed, so the same code gives the
# same verdict on every machine, however fast (FUZZ_RUNS, default 50000 per target; FUZZ_SEED,
# default 1). A crash, a failed assertion, a leak or an input over the memory limit fails the
# run. Time-bounded campaigns are fuzz/campaign.sh. Prints one line per target and
# `fuzz: N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${FUZZ_RUNS:-50000}

# cargo-fuzz needs nightly features: the nightly toolchain where there is one, else the stable
# toolchain with RUSTC_BOOTSTRAP (it ships the sanitizer runtimes).
source fuzz/toolchain.sh || { echo "fuzz: 0 passed, 1 failed (no toolchain for cargo-fuzz)"; exit 1; }

targets=$(cargo fuzz list)
sanitizer=address
start=$(date +%s)
build_log=$(mktemp)
if ! "${fuzz_cargo[@]}" fuzz build --sanitizer "$sanitizer" >"$build_log" 2>&1; then
    echo "fuzz: the address-sanitizer build failed; building without a sanitizer"
    tail -n 20 "$build_log"
    sanitizer=none
    if ! "${fuzz_cargo[@]}" fuzz build --sanitizer none >"$build_log" 2>&1; then
        cat "$build_log"
        echo "fuzz: 0 passed, $(echo "$targets" | wc -w) failed (build)"
        exit 1
    fi
fi
echo "fuzz: built $(echo "$targets" | wc -w) targets (sanitizer: $sanitizer) in $(( $(date +%s) - start ))s"

passed=0
failed=0
for target in $targets; do
    # New inputs go to a scratch directory: the committed seeds stay as they are.
    scratch=$(mktemp -d)
    log=$(mktemp)
    t0=$(date +%s)
    flags=(-rss_limit_mb=512 -malloc_limit_mb=256 -max_len=65536 -timeout=10)
    if "${fuzz_cargo[@]}" fuzz run --sanitizer "$sanitizer" "$target" "fuzz/corpus/$target" -- -runs=0 "${flags[@]}" >"$log" 2>&1 &&
        "${fuzz_cargo[@]}" fuzz run --sanitizer "$sanitizer" "$target" "$scratch" "fuzz/corpus/$target" -- \
            -runs="$runs" -seed="${FUZZ_SEED:-1}" "${flags[@]}" >>"$log" 2>&1; then
        passed=$((passed + 1))
        echo "fuzz $target ... ok ($(( $(date +%s) - t0 ))s, $(grep -o 'corp: [0-9]*' "$log" | tail -n1))"
    else
        failed=$((failed + 1))
        echo "fuzz $target ... FAILED"
        tail -n 40 "$log"
        echo "  (the failing input is under fuzz/artifacts/$target/)"
    fi
    rm -rf "$scratch" "$log"
done
rm -f "$build_log"
echo "fuzz: total $(( $(date +%s) - start ))s"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]

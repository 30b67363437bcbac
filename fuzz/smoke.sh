#!/usr/bin/env bash
# Fuzz smoke run, called by tests/run.sh: builds every cargo-fuzz target with the nightly
# toolchain (AddressSanitizer when the toolchain can build it, else libFuzzer alone), replays
# each committed seed corpus, then fuzzes each target for FUZZ_SECONDS (default 20). A crash,
# a failed assertion, a leak or an input over the memory limit fails the run.
# Prints one line per target and `fuzz: N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "provision: rustup toolchain install nightly"
    rustup toolchain install nightly --profile minimal || { echo "fuzz: 0 passed, 1 failed (no nightly toolchain)"; exit 1; }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "provision: cargo install --locked cargo-fuzz"
    cargo install --locked cargo-fuzz || { echo "fuzz: 0 passed, 1 failed (cargo-fuzz not installable)"; exit 1; }
fi

targets=$(cargo fuzz list)
sanitizer=address
start=$(date +%s)
build_log=$(mktemp)
if ! cargo +nightly fuzz build --sanitizer "$sanitizer" >"$build_log" 2>&1; then
    echo "fuzz: the address-sanitizer build failed; building without a sanitizer"
    tail -n 20 "$build_log"
    sanitizer=none
    if ! cargo +nightly fuzz build --sanitizer none >"$build_log" 2>&1; then
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
    if cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "fuzz/corpus/$target" -- -runs=0 "${flags[@]}" >"$log" 2>&1 &&
        cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "$scratch" "fuzz/corpus/$target" -- \
            -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" "${flags[@]}" >>"$log" 2>&1; then
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

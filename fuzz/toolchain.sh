# Sourced by fuzz/smoke.sh and fuzz/campaign.sh: sets `fuzz_cargo`, the cargo command that runs
# cargo-fuzz, installing cargo-fuzz when it is missing. The nightly toolchain is used where
# rustup has one; otherwise the stable toolchain with RUSTC_BOOTSTRAP=1, which unlocks the
# nightly-only flags cargo-fuzz passes (-Zsanitizer and friends).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz_cargo=(cargo +nightly)
else
    echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    fuzz_cargo=(cargo)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "provision: cargo install --locked cargo-fuzz"
    cargo install --locked cargo-fuzz || return 1
fi

#!/usr/bin/env bash
# A time-bounded fuzz campaign for one target, on every core: new inputs go to
# /var/tmp/fuzz/TARGET (kept between campaigns), the committed seeds are read from
# fuzz/corpus/TARGET. A finding is written to fuzz/artifacts/TARGET/ (see fuzz/README.md).
#   fuzz/campaign.sh shim_hpack_diff 3600
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/campaign.sh TARGET [SECONDS]   (targets: cargo fuzz list)}
seconds=${2:-600}
source fuzz/toolchain.sh
work=/var/tmp/fuzz/$target
mkdir -p "$work"
jobs=$(nproc)
exec "${fuzz_cargo[@]}" fuzz run "$target" "$work" "fuzz/corpus/$target" --jobs "$jobs" -- \
    -workers="$jobs" -max_total_time="$seconds" \
    -rss_limit_mb=512 -malloc_limit_mb=256 -max_len=65536 -timeout=10

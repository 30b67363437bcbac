#!/usr/bin/env bash
# Builds the real Kubernetes binaries from the Go module proxy:
#   tests/k8s/build.sh [VERSION]      (default v1.37.2)
# into target/k8s/<VERSION>/bin/ (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubeadm, kubectl) and prints that directory as its last line. A version already built is not
# built again. k8s.io/kubernetes cannot be built with `go install`: its go.mod points every
# staging module at ./staging, so a throw-away wrapper module requires it and replaces each
# staging module with its published v0.<minor>.<patch>. The version is set at link time, or the
# binaries say v0.0.0-master and version-dependent defaults go wrong. Nothing built here is
# committed.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/../.."
version=${1:-v1.37.2}
[[ $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "build.sh: VERSION must look like v1.37.2, not $version" >&2; exit 2; }
minor=${BASH_REMATCH[1]}
patch=${BASH_REMATCH[2]}
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubeadm kubectl)
# A relative CARGO_TARGET_DIR is relative to where the caller stood, as for cargo; made absolute
# because the build below runs in the wrapper module's directory.
case "${CARGO_TARGET_DIR:-}" in
    "") target_dir=$PWD/target ;;
    /*) target_dir=$CARGO_TARGET_DIR ;;
    *) target_dir=$caller/$CARGO_TARGET_DIR ;;
esac
root="$target_dir/k8s/$version"
bin="$root/bin"
stamp="$bin/.built"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${binaries[*]}" ]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 1; }
wrapper="$root/wrapper"
rm -rf "$wrapper"
mkdir -p "$wrapper" "$bin"
go mod download -json "k8s.io/kubernetes@$version" >"$wrapper/download.json"
gomod=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' "$wrapper/download.json")
go_directive=$(awk '$1 == "go" { print $2; exit }' "$gomod")
{
    echo "module k8s-binaries"
    echo
    echo "go $go_directive"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    # Every module the root go.mod replaces with ./staging/src/k8s.io/<m>.
    awk '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s v0.%s.%s\n", $1, $1, minor, patch }' \
        minor="$minor" patch="$patch" "$gomod"
    echo ")"
} >"$wrapper/go.mod"
{
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for b in "${binaries[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
    echo ")"
} >"$wrapper/tools.go"
start=$(date +%s)
cd "$wrapper"
GOFLAGS=-mod=mod go mod tidy >/dev/null 2>"$wrapper/tidy.log" || { cat "$wrapper/tidy.log" >&2; exit 1; }
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
for b in "${binaries[@]}"; do
    echo "build.sh: go build $b $version" >&2
    go build -ldflags "$ldflags" -o "$bin/$b" "k8s.io/kubernetes/cmd/$b"
done
"$bin/kube-apiserver" --version >&2
echo "${binaries[*]}" >"$stamp"
echo "build.sh: built ${#binaries[@]} binaries in $(( $(date +%s) - start ))s" >&2
echo "$bin"

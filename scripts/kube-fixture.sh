#!/usr/bin/env bash
#! Builds the real Kubernetes control plane used by tests/src/kube_fixture.rs, from the published
#! Go modules pinned in tests/kube/{controlplane,kine}/go.mod, into a cache outside the repository.
#!
#!   scripts/kube-fixture.sh build   build (or reuse) the binaries; prints the directory
#!   scripts/kube-fixture.sh dir     print the directory the binaries live in (no build)
#!
#! The cache key is the two go.sum files, so a version bump rebuilds and a rerun is instant. Go's
#! own module and build caches ($GOMODCACHE, $GOCACHE) survive between runs on one machine too, so
#! even a changed key rebuilds only what changed. KUBE_FIXTURE_JOBS (default 2) bounds `go build -p`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# The version a go.mod requires of a module (`go mod tidy` may list it in a require block).
required() { awk -v m="$2" '$1=="require" && $2==m {print $3} $1==m && $2 ~ /^v/ {print $2}' "$1"; }
K8S_VERSION=$(required tests/kube/controlplane/go.mod k8s.io/kubernetes)
KINE_VERSION=$(required tests/kube/kine/go.mod github.com/k3s-io/kine)
KEY=$(cat tests/kube/controlplane/go.mod tests/kube/controlplane/go.sum tests/kube/kine/go.mod tests/kube/kine/go.sum | sha256sum | cut -c1-12)
CACHE="${WITNESS_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/witness-kube}/${K8S_VERSION}-kine-${KINE_VERSION}-${KEY}"
JOBS="${KUBE_FIXTURE_JOBS:-2}"
BINS=(kube-apiserver kube-controller-manager kube-scheduler kine)

have_all() {
    local b
    for b in "${BINS[@]}"; do [[ -x "$CACHE/$b" ]] || return 1; done
}

build() {
    if have_all; then
        echo "$CACHE"
        return 0
    fi
    command -v go >/dev/null || { echo "kube-fixture: go not found (install Go; .ci/run expects /usr/local/go/bin/go)" >&2; exit 1; }
    mkdir -p "$CACHE.tmp"
    local start=$SECONDS minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    # The version stamp is what `kubectl version` and the apiserver's /version report; without it
    # the binaries call themselves v0.0.0 and version-skew checks between components complain.
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} \
        -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} \
        -X k8s.io/component-base/version.gitTreeState=clean"
    (
        cd tests/kube/controlplane
        CGO_ENABLED=0 go build -p "$JOBS" -ldflags "$ldflags" -o "$CACHE.tmp/" \
            k8s.io/kubernetes/cmd/kube-apiserver \
            k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler
    ) >&2
    (
        # kine's sqlite backend is github.com/mattn/go-sqlite3, which needs cgo (gcc).
        cd tests/kube/kine
        CGO_ENABLED=1 go build -p "$JOBS" -ldflags "-s -w" -o "$CACHE.tmp/kine" github.com/k3s-io/kine
    ) >&2
    rm -rf "$CACHE"
    mv "$CACHE.tmp" "$CACHE"
    echo "kube-fixture: built ${BINS[*]} (${K8S_VERSION}, kine ${KINE_VERSION}) in $((SECONDS - start)) s" >&2
    echo "$CACHE"
}

case "${1:-}" in
    build) build ;;
    dir) echo "$CACHE" ;;
    *)
        echo "usage: $0 build|dir" >&2
        exit 2
        ;;
esac

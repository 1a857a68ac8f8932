#!/usr/bin/env bash
# Builds Helm from its Go module (Helm is not packaged in Debian) into a cache outside the
# repository and prints the binary's path. Skips the build when the binary is already there.
#
# Environment:
#   HELM_VERSION     module version of helm.sh/helm/v3 (default v3.22.0)
#   HELM_CACHE       where the binary is kept (default ${XDG_CACHE_HOME:-$HOME/.cache}/witness-tools)
#   GO               the Go tool (default: go on PATH, else /usr/local/go/bin/go)
# Output: the path of the helm binary on stdout; progress on stderr.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.22.0}
HELM_CACHE=${HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/witness-tools}
BIN=$HELM_CACHE/helm-$HELM_VERSION/helm
if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if [ ! -x "$GO" ]; then
    echo "ensure-helm: no Go toolchain (looked for go on PATH and /usr/local/go/bin/go);" \
        "install Go >= 1.24 or set GO=/path/to/go" >&2
    exit 1
fi
mkdir -p "$HELM_CACHE/helm-$HELM_VERSION"
echo "ensure-helm: building helm $HELM_VERSION with $($GO version) (one-off, a few minutes)" >&2
# GOBIN puts the binary straight into the cache; a temporary name keeps a half-written binary
# from ever being taken for a finished one.
tmp=$(mktemp -d "$HELM_CACHE/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN=$tmp CGO_ENABLED=0 GOFLAGS=-buildvcs=false "$GO" install \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
mv "$tmp/helm" "$BIN"
echo "$BIN"

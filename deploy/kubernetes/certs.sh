#!/usr/bin/env bash
# Puts the certificate files an overlay's kustomization.yaml lists into its certs/ folder, so
# `kubectl kustomize` / `kubectl apply -k` can read them. Without them kubectl stops with
#   evalsymlink failure on '.../certs/ca.pem' : lstat ...: no such file or directory
#
#   deploy/kubernetes/certs.sh OVERLAY --ca-dir CA_DIR    real certificates, issued with
#                                                         `witness certs node` from the CA
#                                                         (`witness certs ca --out CA_DIR`)
#   deploy/kubernetes/certs.sh OVERLAY --placeholders     files that only let the overlay render
#                                                         for review; NOT certificates: an agent
#                                                         given them refuses to start
#
# OVERLAY is a folder such as deploy/kubernetes/overlays/room-a. The cluster and room come from
# its agent.toml; the node names from the `certs/<node>.pem` lines of its secretGenerator.
# Existing files are kept (delete them to issue again). WITNESS=path/to/witness if not on PATH.
set -euo pipefail
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
overlay=${1%/}
mode=$2
ca_dir=${3:-}
[ -f "$overlay/kustomization.yaml" ] || { echo "certs.sh: $overlay/kustomization.yaml not found: pass an overlay folder (deploy/kubernetes/overlays/room-a)" >&2; exit 2; }
case "$mode" in
    --ca-dir) [ -n "$ca_dir" ] && [ -f "$ca_dir/ca.pem" ] || { echo "certs.sh: --ca-dir needs a CA folder with ca.pem and ca-key.pem (witness certs ca --out DIR)" >&2; exit 2; } ;;
    --placeholders) ;;
    *) usage ;;
esac
toml() { sed -n "s/^$1 *= *\"\(.*\)\".*/\1/p" "$overlay/agent.toml" | head -1; }
cluster=$(toml cluster)
room=$(toml room)
files=$(sed -n 's/^ *- *\(certs\/[^ ]*\.pem\) *$/\1/p' "$overlay/kustomization.yaml")
[ -n "$files" ] || { echo "certs.sh: no certs/*.pem lines in $overlay/kustomization.yaml" >&2; exit 1; }
mkdir -p "$overlay/certs"
WITNESS=${WITNESS:-witness}
for f in $files; do
    path=$overlay/$f
    [ -e "$path" ] && { echo "kept     $path"; continue; }
    base=$(basename "$f" .pem)
    if [ "$mode" = --placeholders ]; then
        printf 'PLACEHOLDER for %s (room %s of cluster %s): not a certificate.\nReplace it: deploy/kubernetes/certs.sh %s --ca-dir CA_DIR\n' \
            "$base" "$room" "$cluster" "$overlay" >"$path"
        echo "placeholder $path"
        continue
    fi
    case "$base" in
        ca) cp "$ca_dir/ca.pem" "$path"; echo "copied   $path" ;;
        *-key) ;; # written with its certificate
        *)
            "$WITNESS" certs node --ca-dir "$ca_dir" --cluster "$cluster" --room "$room" \
                --node "$base" --out "$overlay/certs" >/dev/null
            echo "issued   $overlay/certs/$base.pem (+ $base-key.pem) for witness://$cluster/$room/$base" ;;
    esac
done

#!/usr/bin/env python3
"""Compares the objects of a kustomize overlay's render with the Helm chart's render for the
same room: same kinds, names, specs and data. Allowed differences, and only these: Helm's own
labels (helm may add labels, never drop or change one), kustomize's content-hash suffix on
generated ConfigMap names, the base64 line wrapping of Secret data, and comments.
Usage: helm-equivalence.py KUSTOMIZE.yaml HELM.yaml; exits 1 and lists every difference."""
import base64, re, sys, yaml

HASHED = re.compile(r"^(witness-agent-(?:config|drbd)-[a-z0-9-]+?)-[a-z0-9]{10}$")


def unhash(name):
    m = HASHED.match(name or "")
    return m.group(1) if m else name


def load(path, strip_hash):
    out = {}
    for d in yaml.safe_load_all(open(path)):
        if not d:
            continue
        if strip_hash:
            d["metadata"]["name"] = unhash(d["metadata"]["name"])
            if d["kind"] == "DaemonSet":
                for v in d["spec"]["template"]["spec"].get("volumes", []):
                    if "configMap" in v:
                        v["configMap"]["name"] = unhash(v["configMap"]["name"])
        if d["kind"] == "Secret":
            d["data"] = {k: base64.b64decode(v) for k, v in (d.get("data") or {}).items()}
        out[(d["kind"], d["metadata"]["name"])] = d
    return out


def diff(a, b, path, errs, labels=False):
    if labels and isinstance(a, dict) and isinstance(b, dict):
        for k, v in a.items():
            if b.get(k) != v:
                errs.append(f"{path}.{k}: kustomize {v!r}, helm {b.get(k)!r}")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}"
            if k not in b:
                errs.append(f"{p}: only in kustomize ({a[k]!r:.80})")
            elif k not in a:
                if k == "labels":
                    continue  # helm may add labels
                errs.append(f"{p}: only in helm ({b[k]!r:.80})")
            else:
                diff(a[k], b[k], p, errs, labels=k == "labels")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", errs)
    elif a != b:
        errs.append(f"{path}: kustomize {a!r:.100}, helm {b!r:.100}")


k = load(sys.argv[1], True)
h = load(sys.argv[2], False)
errs = []
for key in sorted(set(k) | set(h)):
    if key not in h:
        errs.append(f"{key[0]} {key[1]}: rendered by kustomize, not by helm")
    elif key not in k:
        errs.append(f"{key[0]} {key[1]}: rendered by helm, not by kustomize")
    else:
        diff(k[key], h[key], f"{key[0]}/{key[1]}", errs)
print("\n".join(errs) or f"{len(k)} objects equal: " + ", ".join(f"{a}/{b}" for a, b in sorted(k)))
sys.exit(1 if errs else 0)

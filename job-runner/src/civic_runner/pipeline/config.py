"""The file pipeline's settings, read once from the environment into a frozen dataclass.

S3 names are Civic OS's (S3_BUCKET, S3_ENDPOINT, ...), with its fallback to the AWS_* names and its
deprecation warning. Everything is validated here, so a bad value stops the runner at startup with
a message naming the variable, instead of failing jobs one by one later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from civic_runner.config import SETTINGS as RUNNER_SETTINGS

MAX_PRESIGN_EXPIRY = 7 * 24 * 3600  # SigV4's limit; botocore does not check it, servers reject it later
CANNED_ACLS = frozenset(
    {
        "private",
        "public-read",
        "public-read-write",
        "authenticated-read",
        "aws-exec-read",
        "bucket-owner-read",
        "bucket-owner-full-control",
    }
)
# S3's bucket naming rules (lowercase, 3..63, no leading/trailing dot or dash).
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
SIZE_NAMES = ("small", "medium", "large")  # the three s3_thumbnail_*_key columns


class ConfigError(ValueError):
    """A setting that cannot work; the message names the environment variable."""


class Fit(StrEnum):
    PAD = "pad"  # fit inside the square, pad to it (Civic OS's Go worker)
    CROP = "crop"  # cover the square, centre crop
    INSIDE = "inside"  # fit inside, keep the proportions, no padding


class FailOn(StrEnum):
    """libvips' fail_on: how damaged an image may be and still be thumbnailed."""

    NONE = "none"
    TRUNCATED = "truncated"
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class S3Settings:
    bucket: str = "civic-os-files"
    endpoint: str | None = None  # None: AWS's own endpoints
    public_endpoint: str | None = None  # host the presigned URLs name; default: endpoint
    access_key_id: str | None = None  # None: boto3's default credential chain (IRSA, instance role, ...)
    secret_access_key: str | None = None
    region: str = "us-east-1"
    presign_expiry: int = 900  # Civic OS's Go worker: 15 minutes
    acl: str | None = "public-read"  # on presigned uploads (as a signed header) and on thumbnails
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 2  # botocore's own retries per call, before River's retry applies


@dataclass(frozen=True)
class ThumbnailSettings:
    sizes: tuple[int, int, int] = (150, 400, 800)
    qualities: tuple[int, int, int] = (80, 85, 90)
    fit: Fit = Fit.PAD
    background: tuple[int, int, int] = (255, 255, 255)
    enlarge: bool = False  # small images are padded, not blown up
    max_bytes: int = 100 * 1024 * 1024
    max_megapixels: float = 100.0
    fail_on: FailOn = FailOn.TRUNCATED
    render_timeout: float = 30.0  # a whole pdftoppm or heif-convert run, killed after
    render_max_memory_mb: int = 1024  # address-space limit of those child processes
    # libvips threads per image. The runner renders several images at once (the thumbnails queue's
    # concurrency), so one thread each keeps the cores busy without oversubscribing them; sharp makes
    # the same choice on glibc Linux (measured in bench/RESULTS.md).
    vips_threads: int = 1

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


@dataclass(frozen=True)
class PipelineConfig:
    database_url: str
    schema: str = "metadata"
    db_max_conns: int = 2  # per process, on top of the runner's own pool
    # Seconds one statement may go unanswered before its connection is closed and the job's attempt fails
    # (retried). The pipeline's statements are single-row reads and writes: milliseconds on a live path.
    db_statement_timeout: float = 10.0  # single-row statements; within the frontend's 10 s wait for a URL
    s3: S3Settings = S3Settings()
    thumbnails: ThumbnailSettings = ThumbnailSettings()
    warnings: tuple[str, ...] = ()  # deprecations found while reading; logged by whoever starts the pipeline


# -- parsing (pure) ---------------------------------------------------------------------------------


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value is not None and value.strip() else None


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: not an integer: {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: must be between {lo} and {hi}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: not a number: {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    v = raw.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: not a boolean (true/false): {raw!r}")


def _triple(env: Mapping[str, str], name: str, default: tuple[int, int, int], lo: int, hi: int) -> tuple[int, int, int]:
    raw = _get(env, name)
    if raw is None:
        return default
    parts = [p.strip() for p in raw.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(
            f"{name}: expected three integers like '{','.join(map(str, default))}', got {raw!r}"
        ) from None
    if len(values) != 3:
        raise ConfigError(f"{name}: expected three values (small, medium, large), got {len(values)}")
    if not all(lo <= v <= hi for v in values):
        raise ConfigError(f"{name}: each value must be between {lo} and {hi}, got {raw!r}")
    return values[0], values[1], values[2]


def parse_colour(raw: str) -> tuple[int, int, int]:
    """'#fff', '#ffffff', 'ffffff' or '255,255,255'."""
    s = raw.strip().lower()
    if "," in s:
        parts = [int(p) for p in s.split(",")]
        if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
            raise ValueError(f"expected r,g,b with values 0..255, got {raw!r}")
        return parts[0], parts[1], parts[2]
    s = s.removeprefix("#")
    if len(s) == 3:
        s = "".join(c * 2 for c in s)
    if len(s) != 6 or not all(c in "0123456789abcdef" for c in s):
        raise ValueError(f"expected #rrggbb or r,g,b, got {raw!r}")
    return int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16)


def check_endpoint(name: str, url: str, *, presign: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: expected an http(s) URL like http://minio:9000, got {url!r}")
    if presign and parts.path not in ("", "/"):
        # The frontend takes the bucket from the first path segment of the presigned URL.
        raise ConfigError(
            f"{name}: must not have a path ({parts.path!r}): the frontend reads the bucket from the first "
            "path segment of the presigned URL"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}: must not have a query or fragment: {url!r}")
    return url.rstrip("/")


def _with_fallback(env: Mapping[str, str], name: str, old: str, warnings: list[str]) -> str | None:
    value = _get(env, name)
    if value is not None:
        return value
    value = _get(env, old)
    if value is not None:
        warnings.append(f"{old} is deprecated, use {name} instead")
    return value


def parse_s3(env: Mapping[str, str], warnings: list[str]) -> S3Settings:
    bucket = _get(env, "S3_BUCKET") or "civic-os-files"
    if not BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(f"S3_BUCKET: not a valid bucket name: {bucket!r}")
    endpoint = _with_fallback(env, "S3_ENDPOINT", "AWS_ENDPOINT_URL", warnings)
    public = _get(env, "S3_PUBLIC_ENDPOINT")
    if endpoint is not None:
        endpoint = check_endpoint("S3_ENDPOINT", endpoint, presign=public is None)
    if public is not None:
        public = check_endpoint("S3_PUBLIC_ENDPOINT", public, presign=True)
    key_id = _with_fallback(env, "S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", warnings)
    secret = _with_fallback(env, "S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", warnings)
    if (key_id is None) != (secret is None):
        raise ConfigError("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together (or neither)")
    region = _with_fallback(env, "S3_REGION", "AWS_REGION", warnings) or "us-east-1"
    acl_raw = env.get("S3_ACL")
    acl: str | None = "public-read" if acl_raw is None else (acl_raw.strip() or None)
    if acl is not None and acl not in CANNED_ACLS:
        raise ConfigError(f"S3_ACL: not a canned ACL ({', '.join(sorted(CANNED_ACLS))}; empty for none): {acl!r}")
    return S3Settings(
        bucket=bucket,
        endpoint=endpoint,
        public_endpoint=public,
        access_key_id=key_id,
        secret_access_key=secret,
        region=region,
        presign_expiry=_int(env, "S3_PRESIGN_EXPIRY", 900, 1, MAX_PRESIGN_EXPIRY),
        acl=acl,
        connect_timeout=_float(env, "S3_CONNECT_TIMEOUT", 5.0, 0.1, 300),
        read_timeout=_float(env, "S3_READ_TIMEOUT", 30.0, 0.1, 3600),
        max_attempts=_int(env, "S3_MAX_ATTEMPTS", 2, 1, 10),
    )


def parse_thumbnails(env: Mapping[str, str]) -> ThumbnailSettings:
    sizes = _triple(env, "THUMBNAIL_SIZES", (150, 400, 800), 16, 4096)
    if not sizes[0] <= sizes[1] <= sizes[2]:
        raise ConfigError(f"THUMBNAIL_SIZES: small <= medium <= large, got {sizes}")
    fit_raw = (_get(env, "THUMBNAIL_FIT") or "pad").lower()
    try:
        fit = Fit(fit_raw)
    except ValueError:
        raise ConfigError(f"THUMBNAIL_FIT: one of {', '.join(f.value for f in Fit)}, got {fit_raw!r}") from None
    fail_raw = (_get(env, "THUMBNAIL_FAIL_ON") or "truncated").lower()
    try:
        fail_on = FailOn(fail_raw)
    except ValueError:
        raise ConfigError(f"THUMBNAIL_FAIL_ON: one of {', '.join(f.value for f in FailOn)}, got {fail_raw!r}") from None
    background = (255, 255, 255)
    raw_bg = _get(env, "THUMBNAIL_BACKGROUND")
    if raw_bg is not None:
        try:
            background = parse_colour(raw_bg)
        except ValueError as e:
            raise ConfigError(f"THUMBNAIL_BACKGROUND: {e}") from None
    return ThumbnailSettings(
        sizes=sizes,
        qualities=_triple(env, "THUMBNAIL_QUALITIES", (80, 85, 90), 1, 100),
        fit=fit,
        background=background,
        enlarge=_bool(env, "THUMBNAIL_ENLARGE", False),
        max_bytes=_int(env, "THUMBNAIL_MAX_BYTES", 100 * 1024 * 1024, 1, 5 * 1024**3),
        max_megapixels=_float(env, "THUMBNAIL_MAX_MEGAPIXELS", 100.0, 0.01, 10_000),
        fail_on=fail_on,
        render_timeout=_float(env, "THUMBNAIL_RENDER_TIMEOUT", 30.0, 0.5, 3600),
        render_max_memory_mb=_int(env, "THUMBNAIL_RENDER_MAX_MEMORY_MB", 1024, 64, 65536),
        vips_threads=_int(env, "THUMBNAIL_VIPS_THREADS", 1, 1, 256),
    )


def _runner_setting(env: Mapping[str, str], name: str) -> str:
    """DATABASE_URL and the schema under the runner's own names and precedence, so both agree."""
    setting = next(s for s in RUNNER_SETTINGS if s.name == name)
    for var in setting.env:
        if env.get(var):
            return env[var]
    return str(setting.default)


def from_env(env: Mapping[str, str] | None = None) -> PipelineConfig:
    env = os.environ if env is None else env
    warnings: list[str] = []
    s3 = parse_s3(env, warnings)
    return PipelineConfig(
        database_url=_runner_setting(env, "database_url"),
        schema=_runner_setting(env, "schema"),
        db_max_conns=_int(env, "PIPELINE_DB_MAX_CONNS", 2, 1, 20),
        db_statement_timeout=_float(env, "PIPELINE_DB_STATEMENT_TIMEOUT", 10.0, 0.1, 3600),
        s3=s3,
        thumbnails=parse_thumbnails(env),
        warnings=tuple(warnings),
    )

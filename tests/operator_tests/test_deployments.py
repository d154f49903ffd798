"""What a Deployment watch event tells the owning pools (deployments.view), and the hand-off to them."""

from __future__ import annotations

from typing import Any

import pytest
from civic_operator.deployments import DeploymentView, view

pytestmark = pytest.mark.unit


def _deployment(
    owners: list[str], spec: int | None = 2, replicas: int | None = 2, ready: int | None = 1
) -> dict[str, Any]:
    status = {k: v for k, v in (("replicas", replicas), ("readyReplicas", ready)) if v is not None}
    return {
        "metadata": {"ownerReferences": [{"uid": u, "kind": "CivicWorkerPool"} for u in owners]},
        "spec": {} if spec is None else {"replicas": spec},
        "status": status,
    }


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [
        ("ADDED", _deployment(["u1"]), DeploymentView(("u1",), False, 2, 2, 1)),
        ("MODIFIED", _deployment(["u1"], 3, None, None), DeploymentView(("u1",), False, 3, 0, 0)),  # no status yet
        ("MODIFIED", _deployment(["u1"], None, 0, None), DeploymentView(("u1",), False, 0, 0, 0)),  # scaled to zero
        ("DELETED", _deployment(["u1"]), DeploymentView(("u1",), True, 2, 2, 1)),
        ("MODIFIED", _deployment(["u1", "u2"]), DeploymentView(("u1", "u2"), False, 2, 2, 1)),
        ("MODIFIED", _deployment([]), None),  # owned by no pool
        ("BOOKMARK", {"metadata": {"resourceVersion": "7"}}, None),
        ("ERROR", {"code": 410}, None),
    ],
)
def test_view(kind: str, obj: dict[str, Any], expected: DeploymentView | None) -> None:
    assert view(kind, obj) == expected


def test_views_reach_the_owning_pools_autoscaler() -> None:
    from civic_operator import handlers

    class Scaler:
        def __init__(self) -> None:
            self.calls: list[Any] = []

        def observe_deployment(self, spec_replicas: int, replicas: int, ready: int) -> None:
            self.calls.append((spec_replicas, replicas, ready))

        def forget_deployment(self) -> None:
            self.calls.append("forgotten")

    a, b = Scaler(), Scaler()
    scalers: Any = {"a": (a, None), "b": (b, None)}
    handlers.follow_deployment(scalers, DeploymentView(("a",), False, 3, 2, 1))
    handlers.follow_deployment(scalers, DeploymentView(("b", "gone"), True, 0, 0, 0))
    assert (a.calls, b.calls) == ([(3, 2, 1)], ["forgotten"])

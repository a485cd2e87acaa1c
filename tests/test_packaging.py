"""What a hospital installs: the wheel carries the gateway, its controls and its policies, and none of
the checkout's development tools; an installed gateway started from any folder decides with the
packaged policies (no policy_dir setting needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools.procs import free_port, wait_http
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("emrguard-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_carries_the_policies_and_no_development_tools(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    policies = {n for n in names if n.startswith("opa_policies/")}
    for package in ("purpose", "grading", "roles", "care", "grants", "seal", "write", "request", "response"):
        assert f"opa_policies/emr/{package}/{package}.rego" in policies, package
    assert "opa_policies/emr/config/roles/data.json" in policies
    assert {n.split("/")[0] for n in names} & {"devtools", "tests", "bench", "devserver"} == set()
    assert "plugins/seal/hook.py" in names and "gateway/pipeline.py" in names


def test_serve_from_any_folder_uses_the_packaged_policies(tmp_path: Path) -> None:
    """Only the required settings, started outside the checkout: the embedded engine loads."""
    key = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "idp.pem").write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMRGUARD_")}
    env.update(
        EMRGUARD_LISTEN=f"127.0.0.1:{port}",
        EMRGUARD_UPSTREAM_URL="http://127.0.0.1:9/fhir",  # nothing there: readiness says so
        EMRGUARD_JWT_PUBLIC_KEY_FILES="idp.pem",
        EMRGUARD_ISSUER="https://idp.example/realm",
        EMRGUARD_AUDIENCE="emrguard",
        EMRGUARD_PSEUDONYM_SECRET="p" * 40,
        EMRGUARD_WATERMARK_SECRET="w" * 40,
        EMRGUARD_DB="var/emrguard.sqlite",
    )
    emrguard = Path(sys.executable).parent / "emrguard"
    # The gateway does not start without an audit signing key (II.2): made the way an operator would.
    keys = subprocess.run(
        [str(emrguard), "keys", "init", "--dir", "keys"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert keys.returncode == 0, keys.stderr
    for line in keys.stdout.splitlines():
        if " = " in line:
            key, value = line.split(" = ", 1)
            env["EMRGUARD_" + key.strip().upper()] = value.strip().strip('"')
    assert "EMRGUARD_AUDIT_SIGNING_KEY_FILE" in env and "EMRGUARD_AUDIT_CHECKPOINT_FILE" in env
    proc = subprocess.Popen(
        [str(emrguard), "serve"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        except urllib.error.HTTPError as err:  # 503: the upstream is not there
            checks = json.loads(err.read())["checks"]
        assert checks == {
            "upstream": False,
            "store": True,
            "policy_engine": True,
            "operator_keys": True,
            "audit_checkpoints": True,
        }
        assert (tmp_path / "var/emrguard.sqlite").exists()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert b"policies: " in stderr and b"opa_policies" in stderr

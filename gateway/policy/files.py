"""The policy files: Rego modules and their JSON data, from a directory or from the package.

The policies ship inside the installed package (``opa_policies`` is package data), so
``pip install`` then ``emrguard serve`` from any folder decides with them; ``policy_dir``
(``EMRGUARD_POLICY_DIR``) points the embedded engine at another directory instead.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any


def packaged_policy_dir() -> Path:
    """The opa_policies/ installed with the gateway."""
    return Path(str(resources.files("opa_policies")))


def policy_dir(configured: str) -> Path:
    """The configured directory, or the packaged policies when none is configured."""
    return Path(configured) if configured else packaged_policy_dir()


def policy_modules(policy_dir: str | Path) -> dict[str, str]:
    """The Rego modules of a policy directory (tests excluded), keyed by relative path."""
    root = Path(policy_dir)
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*.rego"))
        if not p.name.endswith("_test.rego")
    }


def policy_data(policy_dir: str | Path) -> dict[str, Any]:
    """JSON data files, nested under their directory path exactly as `opa run DIR` loads them."""
    root = Path(policy_dir)
    data: dict[str, Any] = {}
    for p in sorted(root.rglob("*.json")):
        node = data
        for part in p.relative_to(root).parent.parts:
            node = node.setdefault(part, {})
        node.update(json.loads(p.read_text(encoding="utf-8")))
    return data


def revision_of(modules: dict[str, str], config: Any) -> str:
    """A short hash of the rules and their data (``data.emr.config``), recorded in every audit record.

    Both engines compute it over what they actually evaluate, so the audit says which rules decided.
    """
    digest = hashlib.sha256()
    for text in sorted(modules.values()):
        digest.update(text.encode())
        digest.update(b"\0")
    digest.update(json.dumps(config, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]

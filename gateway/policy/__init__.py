"""Policy Decision Point: one engine interface (engine.py), two engines — a real OPA server
(opa_server.py) and the embedded Rego engine (embedded.py) — over the same opa_policies/
(files.py), answering typed decisions (decisions.py)."""

from gateway.policy.decisions import RequestDecision, ResponseDecision, Verdict
from gateway.policy.engine import PolicyEngine, PolicyError
from gateway.policy.files import packaged_policy_dir, policy_data, policy_dir, policy_modules, revision_of

__all__ = [
    "PolicyEngine",
    "PolicyError",
    "RequestDecision",
    "ResponseDecision",
    "Verdict",
    "packaged_policy_dir",
    "policy_data",
    "policy_dir",
    "policy_modules",
    "revision_of",
]

"""regorus' compiled program (``Program``/``Rvm``) is not used for decisions, and why.

Measured (opa_policies/README.md, performance): the request decision's compiled program runs about
7x faster than the interpreter, but at regorus 0.13.0 its compiler emits no undefined check after
``x := <expr>``: an undefined lookup or call is bound as a value and evaluation goes on, where Rego
(OPA and the interpreter) fails the expression. An aggregate over such a value (``max``) or an
``else`` that is never taken then answers differently, and refusals are lost: 18 of the 2,508
request inputs of the parity table still differ, each a ``search.sensitive-code`` refusal the
compiled program drops (a nurse's search by an HIV code through a parameter found by
``graded_param_pattern``).

The canary below holds the bug as it is: when a regorus upgrade makes it fail, the compiled program
binds undefined as Rego does, and the choice in opa_policies/README.md is to be measured again
(make its request decision identical on the whole parity table, then let the embedded engine use it
with the interpreter as the reference in test_parity.py).
"""

from __future__ import annotations

import json

import regorus

MODULE = """package canary
import rego.v1

table := {"B20": {"grade": 5}}

# Rego: the lookup of "Q" is undefined, so that iteration yields nothing: [5].
grades := [g | some k in ["B20", "Q"]; g := table[k].grade]

# Rego: the body is undefined for "Q", so the else is taken: "none".
kind := k if {
	k := table.Q
} else := "none"
"""


def interpreted(rule: str) -> object:
    engine = regorus.Engine()
    engine.add_policy("canary.rego", MODULE)
    return engine.eval_rule(rule)


def compiled(rule: str) -> object:
    program = regorus.Program.compile_from_modules("{}", [("canary.rego", MODULE)], [rule])
    vm = regorus.Rvm()
    vm.load_program(program)
    vm.set_data_json("{}")
    vm.set_input_json("{}")
    return json.loads(vm.execute())


def test_interpreter_fails_an_undefined_assignment() -> None:
    assert interpreted("data.canary.grades") == [5]
    assert interpreted("data.canary.kind") == "none"


def test_compiled_program_still_binds_undefined() -> None:
    """Known regorus bug (the reason the gateway decides with the interpreter only). If this fails,
    regorus fixed it: measure the compiled request decision again (module docstring)."""
    assert compiled("data.canary.grades") == [5, "<undefined>"]
    assert compiled("data.canary.kind") == "<undefined>"

"""Controls of the notice (国卫办医政函〔2025〕262号), one package each, beside its Rego package in
opa_policies/emr/<control>/: its hook (hook.py), admin routes (admin.py) and tables (store.py).
The contract is gateway/hooks.py; docs/CLAUSES.md maps every clause to its control."""

"""docs/CLAUSES.md, the compliance matrix, stays true to the repository.

Every clause of the notice has a row; every file and test the table names exists; the product code and
the policies cite only clauses of the notice; every clause a Rego package claims in its METADATA
(``custom.clauses``) has a row whose policy cell names that package's file. The notice itself is not
in the repository: its clause ids are CLAUSE_IDS below.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "docs" / "CLAUSES.md"
CLAUSE_IDS = ("I.1", "I.2", "I.3", "I.4", "II.1", "II.2", "II.3", "III")
COLUMNS = ("clause", "requirement", "control (code)", "policy", "tests")
#: Columns whose every backticked token is a repository path (optionally ``path::test_name``).
PATH_COLUMNS = ("control (code)", "policy", "tests")
PRODUCT = ("gateway", "plugins")
POLICIES = ROOT / "opa_policies"

BACKTICKED = re.compile(r"`([^`]+)`")
#: A repository-relative path in free text (the requirement column): at least one folder, no leading /.
RELATIVE_PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)+(?:::\w+)?$")
#: A string that is nothing but a clause id, or looks like one: "II.1", "I.4.2", "III", "IV".
CLAUSE_SHAPED = re.compile(r"^(?:[IVX]+(?:\.\d+)+|[IVX]{2,})$")
#: A clause id mentioned inside text (comments, docstrings, messages): "(II.2 可查询)", "[I.4]".
CLAUSE_IN_TEXT = re.compile(r"(?<![\w.])[IVX]+(?:\.\d+)+(?!\w)")


@dataclass(frozen=True)
class Row:
    line: int
    cells: dict[str, str]

    @property
    def clause(self) -> str:
        return self.cells["clause"].strip()

    def tokens(self, column: str) -> list[str]:
        return BACKTICKED.findall(self.cells[column])

    def where(self) -> str:
        return f"docs/CLAUSES.md:{self.line} ({self.clause})"


def split_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def matrix_rows() -> list[Row]:
    """The rows of the one table whose header is COLUMNS."""
    assert MATRIX.exists(), "docs/CLAUSES.md is missing"
    lines = MATRIX.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|") and tuple(split_row(line)) == COLUMNS:
            start = i + 2  # below the header's |---| line
            break
    else:
        raise AssertionError(f"docs/CLAUSES.md has no table with the columns | {' | '.join(COLUMNS)} |")
    rows: list[Row] = []
    for n, line in enumerate(lines[start:], start=start + 1):
        if not line.lstrip().startswith("|"):
            break
        cells = split_row(line)
        assert len(cells) == len(COLUMNS), (
            f"docs/CLAUSES.md:{n} has {len(cells)} cells, the table has {len(COLUMNS)} "
            "(a '|' inside a cell splits it)"
        )
        rows.append(Row(n, dict(zip(COLUMNS, cells, strict=True))))
    assert rows, "the table of docs/CLAUSES.md has no rows"
    return rows


def policy_modules() -> list[Path]:
    """The Rego modules that reach the gateway (not the *_test.rego files)."""
    return sorted(p for p in POLICIES.rglob("*.rego") if not p.name.endswith("_test.rego"))


def metadata_clauses(path: Path) -> list[tuple[int, str]] | None:
    """(line, clause) of the ``custom.clauses`` of the module's ``# METADATA`` block; None if it has none.

    Takes the inline form (``clauses: [I.4, II.1]``) and the block form (``clauses:`` then ``- I.4``).
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[tuple[int, str]] | None = None
    in_block = in_list = False
    for n, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped == "# METADATA":
            in_block, in_list = True, False
            continue
        if not in_block:
            continue
        if not stripped.startswith("#"):
            in_block = in_list = False
            continue
        body = stripped.lstrip("#").strip()
        inline = re.fullmatch(r"clauses:\s*\[(.*)\]", body)
        if inline:
            found = (found or []) + [
                (n, c.strip().strip("'\"")) for c in inline.group(1).split(",") if c.strip()
            ]
            in_list = False
        elif body == "clauses:":
            found, in_list = found or [], True
        elif in_list and body.startswith("- "):
            found = (found or []) + [(n, body[2:].strip().strip("'\""))]
        else:
            in_list = False
    return found


def cited_clauses(path: Path) -> set[tuple[int, str]]:
    """(line, clause) of every clause id a product module or policy cites: clause-shaped string
    literals (``"II.1"``, ``clause="I.4"``) and mentions in any text (comments, docstrings, messages)."""
    text = path.read_text(encoding="utf-8")
    found = {(text.count("\n", 0, m.start()) + 1, m.group(0)) for m in CLAUSE_IN_TEXT.finditer(text)}
    if path.suffix == ".py":
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if CLAUSE_SHAPED.fullmatch(node.value.strip()):
                    found.add((node.lineno, node.value.strip()))
    else:
        found |= {
            (text.count("\n", 0, m.start()) + 1, m.group(1).strip())
            for m in re.finditer(r"\"([^\"\n]*)\"", text)
            if CLAUSE_SHAPED.fullmatch(m.group(1).strip())
        }
    return found


def test_every_clause_of_the_notice_has_a_row() -> None:
    rows = matrix_rows()
    unknown = [f"{r.where()}: '{r.clause}'" for r in rows if r.clause not in CLAUSE_IDS]
    assert not unknown, f"rows of docs/CLAUSES.md name clauses the notice does not have: {unknown}"
    missing = [c for c in CLAUSE_IDS if not any(r.clause == c for r in rows)]
    assert not missing, f"clauses of the notice with no row in docs/CLAUSES.md: {missing}"


def test_every_path_and_test_the_table_names_exists() -> None:
    problems: list[str] = []
    for row in matrix_rows():
        named = [(c, t) for c in PATH_COLUMNS for t in row.tokens(c)]
        named += [("requirement", t) for t in row.tokens("requirement") if RELATIVE_PATH.fullmatch(t)]
        for column, token in named:
            path_text, _, test_name = token.partition("::")
            path = ROOT / path_text
            if path_text.startswith("/") or not path.resolve().is_relative_to(ROOT):
                problems.append(f"{row.where()} {column}: '{token}' is not a repository-relative path")
            elif not path.is_file():
                problems.append(f"{row.where()} {column}: '{path_text}' does not exist")
            elif test_name:
                text = path.read_text(encoding="utf-8")
                if path.suffix == ".rego":
                    defined = re.search(rf"^{re.escape(test_name)}\b", text, re.M)
                else:
                    defined = re.search(rf"^\s*(?:async\s+)?def {re.escape(test_name)}\(", text, re.M)
                if not defined:
                    problems.append(f"{row.where()} {column}: '{path_text}' defines no test '{test_name}'")
    assert not problems, "docs/CLAUSES.md names what is not there:\n" + "\n".join(problems)


def test_rows_not_built_name_no_code_and_rows_without_code_say_so() -> None:
    problems: list[str] = []
    for row in matrix_rows():
        not_built = "not built yet" in row.cells["requirement"]
        names_code = any(row.tokens(c) for c in PATH_COLUMNS)
        if not_built and names_code:
            problems.append(f"{row.where()} says 'not built yet' but names code, policies or tests")
        if not not_built and not row.tokens("control (code)") and not row.tokens("policy"):
            problems.append(f"{row.where()} names neither code nor policy and does not say 'not built yet'")
    assert not problems, "\n".join(problems)


def test_code_and_policies_cite_only_clauses_of_the_notice() -> None:
    files = [p for top in PRODUCT for p in sorted((ROOT / top).rglob("*.py"))] + policy_modules()
    bad = {
        f"{path.relative_to(ROOT)}:{line}: '{clause}'"
        for path in files
        for line, clause in cited_clauses(path)
        if clause not in CLAUSE_IDS
    }
    for path in policy_modules():
        bad |= {  # also items the text scan cannot tell from prose, such as a bare "II"
            f"{path.relative_to(ROOT)}:{line}: '{clause}'"
            for line, clause in metadata_clauses(path) or []
            if clause not in CLAUSE_IDS
        }
    assert not bad, f"clause ids that are not the notice's {list(CLAUSE_IDS)}:\n" + "\n".join(sorted(bad))


def test_every_clause_a_policy_package_claims_has_a_row_naming_it() -> None:
    rows = matrix_rows()
    problems: list[str] = []
    for path in policy_modules():
        rel = path.relative_to(ROOT).as_posix()
        clauses = metadata_clauses(path)
        if clauses is None:
            problems.append(f"{rel} has no '# METADATA' block with custom.clauses")
            continue
        for line, clause in clauses:
            if not any(r.clause == clause and rel in r.tokens("policy") for r in rows):
                problems.append(
                    f"{rel}:{line} claims {clause}, but no {clause} row of docs/CLAUSES.md names it "
                    "in its policy cell"
                )
    assert not problems, "\n".join(problems)

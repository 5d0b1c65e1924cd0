"""The documentation stays true to the code: generated pages current, README's commands
the ones CI runs, every page reachable from the site's navigation."""

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from fedcl.config import keys
from fedcl.configure import every_section
from fedcl.options import options_markdown
from fedcl.plugins import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]


def test_the_options_page_is_generated_from_the_configuration():
    page = options_markdown()
    assert (ROOT / "docs" / "options.md").read_text() == page, (
        "docs/options.md is stale: python -m fedcl.options > docs/options.md"
    )
    every = keys(*every_section())  # the core's and every built-in's own keys
    assert len(every) == len({k.name for k in every}) > 60
    for key in every:
        assert f"| `{key.name}` |" in page


def test_ci_runs_the_readmes_test_line_and_the_readme_stays_short():
    readme = (ROOT / "README.md").read_text()
    quickstart = re.search(r"## Quickstart\n(.*?)```bash\n(.*?)\n```", readme, re.S)
    assert quickstart, "README has a Quickstart with one bash block"
    # without a GPU the first line would download CUDA wheels: the hint comes before it
    assert "download.pytorch.org/whl/cpu" in quickstart.group(1)
    lines = quickstart.group(2).splitlines()
    assert len(lines) == 2  # one line installs and runs, one installs and tests
    assert lines[1] in (ROOT / ".ci" / "run").read_text().splitlines()
    assert len(readme.encode()) <= 10_000


def _nav_pages(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_pages(value)


def test_every_page_of_the_site_is_in_its_navigation():
    # mkdocs.yml uses no custom YAML tags, so a safe load reads it
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_pages(config["nav"]))
    pages = {p.name for p in (ROOT / "docs").glob("*.md") if not p.name.startswith("_")}
    assert pages == nav


def test_the_docs_requirements_are_the_docs_extra():
    # docs/requirements.txt builds the site without fedcl and torch; it must not drift
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["docs"]
    listed = [
        line.strip()
        for line in (ROOT / "docs" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert listed == extra
    # mkdocstrings formats the API reference's signatures only if a formatter is installed
    assert any(req.startswith(("ruff", "black")) for req in extra)


# numpydoc: one parameter per entry (`a, b : int, float` gives both names both types
# in the API reference). Entries in modules under refactoring elsewhere, still to split:
_PENDING_ENTRIES: set[tuple[str, str, str]] = set()  # none left
_DOC_SECTIONS = {"Parameters", "Other Parameters", "Attributes", "Returns", "Yields", "Raises"}


def _shared_entries(docstring):
    lines = docstring.expandtabs().splitlines()
    section, indent = None, None
    for i, line in enumerate(lines):
        text = line.strip()
        if text and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            section, indent = (text if text in _DOC_SECTIONS else None), None
            continue
        if section is None or not text or set(text) == {"-"}:
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth == indent and re.match(r"\*{0,2}\w+\s*,\s*\*{0,2}\w+(\s*,\s*\w+)*\s*(:|$)", text):
            yield text


def test_every_docstring_entry_documents_one_name():
    found = set()
    for package in ("fedcl", "clients", "server"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    for entry in _shared_entries(ast.get_docstring(node) or ""):
                        found.add((path.relative_to(ROOT).as_posix(), node.name, entry))
    assert found <= _PENDING_ENTRIES, sorted(found - _PENDING_ENTRIES)


def test_formulas_become_mathml_at_build_time():
    pytest.importorskip("latex2mathml")
    hooks = _load_hooks()
    page = (
        '<p><span class="arithmatex">\\(a &lt; b\\)</span></p>'
        '<div class="arithmatex">\\[\\sum_i (1 - C_{ii})^2\\]</div>'
    )
    out = hooks.on_page_content(page)
    assert "\\(" not in out and "\\[" not in out
    assert out.count("<math") == 2 and 'display="block"' in out
    assert "<mo>&#x0003C;</mo>" in out or "<mo>&lt;</mo>" in out  # the escaped < is a <


def _load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CONSOLE = re.compile(r"^```console\n(.*?)^```", re.M | re.S)


def _sessions():
    for page in sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]):
        for block in _CONSOLE.findall(page.read_text()):
            yield pytest.param(block, id=page.name)


@pytest.mark.parametrize("session", list(_sessions()))
def test_the_docs_error_examples_are_what_fedcl_prints(session, tmp_path):
    # A ```console block replays a session: `$ cat FILE` lines give a file's content,
    # `$ fedcl ...` lines a command and what it prints. Only errors are shown this way
    # (they answer in a second, before torch loads).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}
    steps = re.split(r"^\$ ", session, flags=re.M)[1:]
    assert steps, "a console block starts with a `$ ` command"
    for step in steps:
        command, _, output = step.partition("\n")
        args = shlex.split(command)
        if args[0] == "cat":
            (tmp_path / args[1]).write_text(output)
            continue
        assert args[0] == "fedcl" and output.startswith("fedcl: error:"), command
        done = subprocess.run(
            [sys.executable, "-m", "fedcl", *args[1:]],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stdout + done.stderr == output, f"{command}: the docs show another message"


_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)


def test_the_docs_count_and_list_the_built_in_strategies():
    builtin = STRATEGIES.builtin
    start = (ROOT / "docs" / "getting-started.md").read_text()
    said = re.search(r"`--strategies all` is every built-in \((\w+)", start)
    assert said, "Getting started says how many strategies `--strategies all` runs"
    assert said.group(1) == _NUMBERS.split()[len(builtin)]
    table = (ROOT / "docs" / "strategies.md").read_text()
    assert all(f"`{name}`" in table for name in builtin)


def test_the_citation_metadata_matches_the_package_and_the_bibtex():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == project["version"]
    assert cff["license"] == project["license"]
    assert "Apache License" in (ROOT / "LICENSE").read_text().split("\n", 3)[1]
    (paper,) = cff["references"]
    (arxiv,) = [i["value"] for i in paper["identifiers"]]  # "arXiv:2501.04588"
    title = " ".join(paper["title"].split())
    for page in (ROOT / "README.md", ROOT / "docs" / "index.md"):
        bibtex = re.search(r"```bibtex\n(.*?)```", page.read_text(), re.S)
        assert bibtex, f"{page.name} has the paper's BibTeX"
        entry = " ".join(bibtex.group(1).split())
        assert f"eprint = {{{arxiv.removeprefix('arXiv:')}}}" in entry
        assert f"title = {{{title}}}" in entry
        authors = [f"{a['family-names']}, {a['given-names']}" for a in paper["authors"]]
        assert f"author = {{{' and '.join(authors)}}}" in entry


def _generated_block_is_current(name: str, script: Path, page_name: str = "RESULTS.md") -> str:
    """Assert ``docs/page_name``'s block ``name`` is what ``script`` prints now; return the page."""
    printed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True
    ).stdout
    page = (ROOT / "docs" / page_name).read_text()
    block = re.search(rf"<!-- {name}: python (\S+) -->\n(.*?)<!-- end {name} -->", page, re.S)
    assert block and block.group(1) == script.relative_to(ROOT).as_posix()
    assert block.group(2) == printed, f"docs/{page_name} is stale: python {block.group(1)}"
    return page


def test_version_03s_table_in_the_decision_log_is_generated_from_its_committed_results():
    script = ROOT / "docs" / "results" / "paper-v03" / "table.py"
    page = _generated_block_is_current("headline", script, "decision-log.md")
    # every comparison figure committed beside the table is shown
    for figure in sorted(script.parent.glob("*-comparison.png")):
        assert f"](results/paper-v03/{figure.name})" in page


def test_the_studys_tables_are_generated_from_the_scenarios_committed_tables():
    # the study's entries on the reporting seeds, from each scenario folder's per-seed.csv
    _generated_block_is_current("study", ROOT / "docs" / "results" / "v04-protocol" / "table.py")

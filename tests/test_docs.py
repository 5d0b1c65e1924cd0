"""The documentation stays true to the code: generated pages current, README's commands
the ones CI runs, every page reachable from the site's navigation."""

import re
from pathlib import Path

import yaml

from fedcl.config import RunConfig, keys
from fedcl.options import options_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_the_options_page_is_generated_from_the_configuration():
    page = options_markdown()
    assert (ROOT / "docs" / "options.md").read_text() == page, (
        "docs/options.md is stale: python -m fedcl.options > docs/options.md"
    )
    assert len(keys()) == len(RunConfig().to_mapping()) > 60
    for key in keys():
        assert f"| `{key.name}` |" in page


def test_ci_runs_the_readmes_test_line_and_the_readme_stays_short():
    readme = (ROOT / "README.md").read_text()
    quickstart = re.search(r"## Quickstart\n\n```bash\n(.*?)\n```", readme, re.S)
    assert quickstart, "README has a Quickstart with one bash block"
    lines = quickstart.group(1).splitlines()
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

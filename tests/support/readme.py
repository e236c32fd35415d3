"""The README and docs/ as tests read them: the key tables of their reference sections."""

import re

from tests.support.program import PROJECT_DIR

README = (PROJECT_DIR / "README.md").read_text()
DOCS = {path: path.read_text() for path in [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md"))]}
# Every page, one after the other: a section is looked up by its heading wherever it lives.
DOCUMENTATION = "\n".join(DOCS.values())


def section(title: str) -> str:
    """The text under the `## <title>` heading, up to the next `## ` or the next page's title."""
    return re.split(r"\n#{1,2} ", DOCUMENTATION.split(f"\n## {title}\n", 1)[1], maxsplit=1)[0]


def table_keys(title: str) -> set[str]:
    """First-column keys of the tables under a `## <title>` heading."""
    return set(re.findall(r"^\| `([A-Za-z.]+)` \|", section(title), re.M))


def table_rows(header: str) -> dict[str, tuple[str, ...]]:
    """The rows of the table whose header line is `header`: first cell -> the other cells."""
    text = DOCUMENTATION.split(f"\n{header}\n", 1)[1]
    rows = {}
    for line in text.splitlines()[1:]:  # past the |---| line
        if not line.startswith("|"):
            break
        first, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        rows[first] = tuple(cells)
    return rows

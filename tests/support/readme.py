"""The README as tests read it: the key tables of its reference sections."""

import re

from tests.support.program import PROJECT_DIR

README = (PROJECT_DIR / "README.md").read_text()


def table_keys(section: str) -> set[str]:
    """First-column keys of the tables under a `## <section>` heading."""
    text = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z.]+)` \|", text, re.M))


def table_rows(header: str) -> dict[str, tuple[str, ...]]:
    """The rows of the table whose header line is `header`: first cell -> the other cells."""
    text = README.split(f"\n{header}\n", 1)[1]
    rows = {}
    for line in text.splitlines()[1:]:  # past the |---| line
        if not line.startswith("|"):
            break
        first, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        rows[first] = tuple(cells)
    return rows

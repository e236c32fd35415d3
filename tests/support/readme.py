"""The README as tests read it: the key tables of its reference sections."""

import re

from tests.support.program import PROJECT_DIR

README = (PROJECT_DIR / "README.md").read_text()


def table_keys(section: str) -> set[str]:
    """First-column keys of the tables under a `## <section>` heading."""
    text = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z.]+)` \|", text, re.M))

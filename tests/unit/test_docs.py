"""The README and docs/ must match the code: every config key documented, the test command CI
runs is the one the README gives, and every link between the pages leads to a heading."""

import re
from pathlib import Path

import yaml

from components.config import project_defaults
from components.monitoring import RUNBOOK
from tests.support.collector import configmap_config
from tests.support.pins import engine_versions
from tests.support.program import PROJECT_DIR, run_program
from tests.support.readme import DOCS, README, section, table_keys

# Objects documented as a whole rather than key by key.
DOCUMENTED_WHOLE = {"resources", "annotations", "experiments", "noise", "databases", "extraAllowedHosts",
                    "dashboardLabels"}


def leaf_keys(value, prefix=""):
    if isinstance(value, dict) and value and prefix.rsplit(".", 1)[-1] not in DOCUMENTED_WHOLE:
        for key, item in value.items():
            yield from leaf_keys(item, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def test_every_config_key_is_in_the_configuration_reference():
    documented = table_keys("Configuration")
    declared = {key for name, default in project_defaults().items() for key in leaf_keys(default, name)}
    assert declared - documented == set()
    assert documented - declared == set()


def test_the_configuration_reference_gives_each_default_image_of_pulumi_yaml():
    text = section("Configuration")
    documented = dict(re.findall(r"^\| `([A-Za-z]+\.image)` \| `([^`]+)` \|", text, re.M))
    declared = {f"{name}.image": default["image"] for name, default in project_defaults().items()
                if isinstance(default, dict) and "image" in default}
    assert documented == declared


def test_every_stack_output_is_in_the_reference(dev):
    assert table_keys("Outputs") == set(dev.outputs)


def test_ci_runs_the_readme_test_command():
    (command,) = re.findall(r"^python -m pip install -r requirements-dev.txt && (python -m pytest[^\n]*)$",
                            README, re.M)
    ci = (PROJECT_DIR / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(command)}$", ci, re.M)


def test_the_pinned_versions_table_is_requirements_txt():
    text = section("Pinned versions")
    table = dict(re.findall(r"^\| `([a-z-]+)` \| `([0-9][^`]*)` \|", text, re.M))
    assert table == engine_versions(), f"docs/development.md's Pinned versions {table} are not requirements.txt's"
    prerequisites = README.split("\n## Prerequisites\n", 1)[1].split("\n## ", 1)[0]
    assert f"{engine_versions()['pulumi']} or newer" in prerequisites
    assert f'requiredPulumiVersion: ">={engine_versions()["pulumi"]}"' in prerequisites


def github_anchors(text: str) -> set[str]:
    """The ids GitHub gives a page's headings (outside code blocks): lower case, punctuation dropped,
    spaces to hyphens, `-1`, `-2`... on repeats."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose, re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(f"{anchor}-{seen[anchor]}" if anchor in seen else anchor)
        seen[anchor] = seen.get(anchor, 0) + 1
    return anchors


def test_every_link_between_the_pages_leads_to_a_file_and_a_heading():
    anchors = {path: github_anchors(text) for path, text in DOCS.items()}
    links = [(path, target, anchor) for path, text in DOCS.items()
             for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]+))?\)", text)]
    runbook_page, runbook_anchor = RUNBOOK.split("#")
    links.append((PROJECT_DIR / "README.md", runbook_page, runbook_anchor))  # the alerts' link, from the root
    broken = []
    for path, target, anchor in links:
        linked = (path.parent / target).resolve() if target else path
        if not linked.exists() or (anchor and anchor not in anchors.get(linked, set())):
            broken.append(f"{path.relative_to(PROJECT_DIR)}: ({target}#{anchor})")
    assert broken == []


def test_the_readme_is_a_landing_page_that_links_every_page_of_docs():
    pages = {Path(p).name for p in re.findall(r"\]\(docs/([\w-]+\.md)\)", README)}
    assert pages == {path.name for path in (PROJECT_DIR / "docs").glob("*.md")}
    assert README.count("\n") < 200


def test_the_first_trace_walkthroughs_config_routes_its_service_and_admits_its_namespace():
    """The stack config "Send your first trace" shows is valid, and does what the text says."""
    readme_section = README.split("\n## Send your first trace\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"^```yaml\n(.*?)^```", readme_section, re.M | re.S)
    config = {key.split(":", 1)[1]: value for key, value in yaml.safe_load(block).items()}
    run = run_program("dev", **config)
    routing = configmap_config(run)["connectors"]["routing"]
    assert routing["default_pipelines"] == ["traces/llamastack-traces"]
    assert routing["table"] == [{"context": "resource", "condition": 'attributes["service.name"] == "chat-api"',
                                 "pipelines": ["traces/chat"]}]
    (policy,) = [r for r in run.resources if r.kind == "NetworkPolicy" and r.name.endswith("otel-collector")]
    otlp = next(rule for rule in policy.outputs["spec"]["ingress"]
                if {port["port"] for port in rule["ports"]} == {4317, 4318})
    assert {"podSelector": {}, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "chat"}}} \
        in otlp["from"]

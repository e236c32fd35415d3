import pytest

from tests.support.program import STACKS, ProgramRun, run_program


@pytest.fixture(scope="session")
def stack_runs() -> dict[str, ProgramRun]:
    """One mock run of the program per Pulumi.<stack>.yaml."""
    return {stack: run_program(stack) for stack in STACKS}


@pytest.fixture(scope="session")
def dev(stack_runs) -> ProgramRun:
    return stack_runs["dev"]

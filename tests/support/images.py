"""The images the program declares, as this node runs them: what stands in for each
image's file system, and what the image itself decides about the process (ENTRYPOINT,
CMD, USER, ENV, /etc/passwd and /etc/group), read from the images' recipes.

- `ghcr.io/mlflow/mlflow:v<X>-full` is mlflow's `docker/Dockerfile.full`:
  `python:3.11-slim-bookworm` plus `pip install mlflow[extras,azure,db,gateway,genai,auth]==X`,
  no USER, no ENTRYPOINT. Its stand-in is a virtualenv of Debian's Python 3.11 with exactly
  that install, so the server under test runs the image's server stack (uvicorn[standard]:
  uvloop, httptools) and drivers, not the test venv's.
- `postgres:<17.x>` is docker-library/postgres' Debian image: USER root, ENTRYPOINT
  `docker-entrypoint.sh`, CMD `postgres`, a `postgres` user 999:999. Its stand-in is
  Debian's PostgreSQL server and the entrypoint reduced to what this stack relies on
  (below), permission handling included.
- `otel/opentelemetry-collector-contrib:<X>` is `FROM scratch`, USER 10001:10001, ENTRYPOINT
  the binary: no /etc/passwd, no shell, no /tmp. Its stand-in is the binary
  collector/build.sh builds at the deployed version.
- `quay.io/oauth2-proxy/oauth2-proxy:<vX>` is oauth2-proxy's Dockerfile: the binary on
  `gcr.io/distroless/static:nonroot` (USER 65532, passwd and group with root, nobody and
  nonroot, no shell), ENTRYPOINT `/bin/oauth2-proxy`, the image's public CA bundle. Its
  stand-in is the binary built from the Go module at the image's version.

Stand-ins live in a store every container user can read, as a node's image store is
(`IMAGE_STORE`, outside any checkout: a user's home or a 0700 temp dir cannot be entered
by uid 1000). Each is built once per recipe, under a lock, so worktrees share it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from components.config import project_defaults, version_from_image
from tests.support.gobuild import go_binary

IMAGE_STORE = Path(os.environ.get("MLFLOW_TRACING_IMAGE_STORE", "/var/lib/mlflow-tracing-tests/images"))
BUILD_TIMEOUT = 1800
# What a runtime puts on PATH when the image sets none (containerd's and CRI-O's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MLFLOW_PREFIX = "ghcr.io/mlflow/mlflow:"
POSTGRES_PREFIX = "postgres:"
COLLECTOR_PREFIX = "otel/opentelemetry-collector-contrib:"
OAUTH2_PROXY_PREFIX = "quay.io/oauth2-proxy/oauth2-proxy:"
OAUTH2_PROXY_MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
# mlflow's docker/Dockerfile.full, the recipe of the -full image.
MLFLOW_EXTRAS = "extras,azure,db,gateway,genai,auth"
IMAGE_PYTHON = "3.11"  # python:3.11-slim-bookworm

# The users and groups of a Debian bookworm base image (base-passwd), which both the
# python and the postgres images start from.
DEBIAN_PASSWD = (
    "root:x:0:0:root:/root:/bin/bash",
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
    "bin:x:2:2:bin:/bin:/usr/sbin/nologin",
    "sys:x:3:3:sys:/dev:/usr/sbin/nologin",
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
)
DEBIAN_GROUP = ("root:x:0:", "daemon:x:1:", "bin:x:2:", "sys:x:3:", "nogroup:x:65534:")
# gcr.io/distroless/static:nonroot's
DISTROLESS_PASSWD = ("root:x:0:0:root:/root:/sbin/nologin", "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin",
                     "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin")
DISTROLESS_GROUP = ("root:x:0:", "nobody:x:65534:", "nonroot:x:65532:")

# docker-library/postgres' docker-entrypoint.sh, reduced to what this stack relies on, in its
# order: as a non-root user it creates PGDATA and makes it 0700 (PostgreSQL refuses a
# group-writable data directory), tries the socket directory's mode (ignoring failure, as the
# image does), initialises an empty data directory with POSTGRES_USER/POSTGRES_PASSWORD and
# creates POSTGRES_DB, then execs the server. As root the image would re-exec itself as
# postgres; this stack never runs it as root, and the stand-in refuses to. `SOCKETS` and
# `PGPORT` are the node's: the socket directory's volume and the pod's loopback port.
POSTGRES_ENTRYPOINT = r"""#!/bin/sh
set -eu
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
if [ "$(id -u)" = 0 ]; then echo "stand-in docker-entrypoint.sh: not run as root here" >&2; exit 1; fi
mkdir -p "$PGDATA"
chmod 00700 "$PGDATA" || :
mkdir -p "$SOCKETS" || :
chmod 03775 "$SOCKETS" 2>/dev/null || :
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required for an empty data directory}"
  pwfile=$(mktemp); printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile="$pwfile" --auth=scram-sha-256 \
    -E UTF8 --locale=C >/dev/null
  rm -f "$pwfile"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses= -k $SOCKETS" -w start >/dev/null
  PGPASSWORD=$POSTGRES_PASSWORD psql -h "$SOCKETS" -U "${POSTGRES_USER:-postgres}" -d postgres \
    -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE \"${POSTGRES_DB:-${POSTGRES_USER:-postgres}}\""
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
shift
exec postgres -D "$PGDATA" -c listen_addresses=127.0.0.1 -k "$SOCKETS" "$@"
"""


@dataclass(frozen=True)
class Image:
    """What an image decides about its process, and where its stand-in's files are."""

    reference: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str | None  # USER, as the Dockerfile writes it; None: root
    path: str  # ENV PATH (the stand-in's directories first)
    env: dict[str, str] = field(default_factory=dict)  # other ENV
    passwd: tuple[str, ...] | None = DEBIAN_PASSWD  # /etc/passwd lines; None: the image has no such file
    group: tuple[str, ...] | None = DEBIAN_GROUP
    stop_signal: str = "SIGTERM"  # STOPSIGNAL

    def passwd_entry(self, uid: int) -> list[str] | None:
        """The image's /etc/passwd fields for `uid`, if it has an entry."""
        for line in self.passwd or ():
            fields = line.split(":")
            if int(fields[2]) == uid:
                return fields
        return None

    def user_ids(self) -> tuple[int, int | None]:
        """(uid, gid or None) of USER; a name is looked up in the image's passwd."""
        if self.user is None:
            return 0, None
        user, _, group = self.user.partition(":")
        if user.isdigit():
            return int(user), int(group) if group.isdigit() else None
        entry = next(line.split(":") for line in self.passwd or () if line.split(":")[0] == user)
        return int(entry[2]), int(entry[3])


def stored_build(name: str, recipe: str, build) -> Path:
    """`IMAGE_STORE/<name>-<hash of recipe>`, built by `build(directory)` once; a partial build is redone."""
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    directory = IMAGE_STORE / f"{name}-{digest}"
    done = directory / ".complete"
    if done.exists():
        return directory
    IMAGE_STORE.mkdir(parents=True, exist_ok=True)
    for parent in (IMAGE_STORE, *IMAGE_STORE.parents):  # every container user must reach it
        if parent.stat().st_mode & 0o005 != 0o005:
            parent.chmod(parent.stat().st_mode | 0o005)
    with open(IMAGE_STORE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(mode=0o755)
            old_umask = os.umask(0o022)
            try:
                build(directory)
            finally:
                os.umask(old_umask)
            done.write_text(recipe)
    return directory


def _image_python() -> str:
    python = shutil.which(f"python{IMAGE_PYTHON}", path="/usr/bin")
    if python is None:
        raise RuntimeError(f"Debian's python{IMAGE_PYTHON} is missing: the MLflow image's stand-in is a virtualenv of "
                           f"it (apt-get install python{IMAGE_PYTHON}-venv; .ci/run does this)")
    return python


def image_version(reference: str) -> str:
    """The version an image's tag names (`ghcr.io/mlflow/mlflow:v3.17.2-full@sha256:...` -> 3.17.2): what its
    stand-in installs or was built at."""
    found = version_from_image(reference.split("@", 1)[0])
    if found is None:
        raise ValueError(f"no stand-in for image {reference!r}: its tag names no version")
    return found


def python_venv(name: str, requirement: str) -> Path:
    """`IMAGE_STORE/<name>-<hash>/venv`: a virtualenv of Debian's Python 3.11 holding exactly
    `requirement` (pip's resolution of it), built on first use."""

    def build(directory: Path) -> None:
        venv = directory / "venv"
        subprocess.run([_image_python(), "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                               requirement], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"pip install {requirement} into {directory} failed:\n{done.stderr[-4000:]}")

    return stored_build(name, f"python{IMAGE_PYTHON} {requirement}", build) / "venv"


def mlflow_venv(reference: str) -> Path:
    """The virtualenv that stands in for the -full image of `reference`'s version (~3 min on first use)."""
    return python_venv(f"mlflow-{image_version(reference)}", f"mlflow[{MLFLOW_EXTRAS}]=={image_version(reference)}")


def mlflow_image(reference: str) -> Image:
    """The -full image of `reference`'s version: its stand-in built on first use (~3 min)."""
    venv = mlflow_venv(reference)
    return Image(reference, entrypoint=(), cmd=("python3",), user=None,
                 path=f"{venv / 'bin'}:{DEFAULT_PATH}", env={"LANG": "C.UTF-8"})


def postgres_bin_dir() -> Path:
    """Debian's PostgreSQL server binaries (pg_ctl, postgres, initdb)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; install Debian's "
            "`postgresql` package (.ci/run does this)"
        )
    return found[-1].parent


def postgres_image(reference: str) -> Image:
    def build(directory: Path) -> None:
        entrypoint = directory / "bin" / "docker-entrypoint.sh"
        entrypoint.parent.mkdir(mode=0o755)
        entrypoint.write_text(POSTGRES_ENTRYPOINT)
        entrypoint.chmod(0o755)

    root = stored_build("postgres", POSTGRES_ENTRYPOINT, build)
    return Image(
        reference, entrypoint=("docker-entrypoint.sh",), cmd=("postgres",), user=None,
        path=f"{root / 'bin'}:{postgres_bin_dir()}:{DEFAULT_PATH}",
        # PGDATA is the image's; PGPORT (the server's default port, mapped to the pod's loopback
        # port) and SOCKETS (the socket directory, mapped to its volume) tell the stand-in where.
        env={"PGDATA": "/var/lib/postgresql/data", "LANG": "C.UTF-8", "PGPORT": "5432",
             "SOCKETS": "/var/run/postgresql"},
        passwd=(*DEBIAN_PASSWD, "postgres:x:999:999::/var/lib/postgresql:/bin/bash"),
        group=(*DEBIAN_GROUP, "postgres:x:999:"),
        stop_signal="SIGINT",
    )


def collector_image(reference: str, binary: Path) -> Image:
    def build(directory: Path) -> None:
        shutil.copy(binary, directory / "otelcol-contrib")
        (directory / "otelcol-contrib").chmod(0o755)

    root = stored_build(f"otelcol-{image_version(reference)}", hashlib.sha256(binary.read_bytes()).hexdigest(),
                         build)
    return Image(reference, entrypoint=(str(root / "otelcol-contrib"),),
                 cmd=("--config", "/etc/otelcol-contrib/config.yaml"), user="10001:10001", path=DEFAULT_PATH,
                 passwd=None, group=None)


def oauth2_proxy_binary(reference: str) -> Path:
    """oauth2-proxy built from its Go module at the image's version (as its Dockerfile's `make build`
    stamps the version)."""
    version = reference.rsplit(":", 1)[1]
    return go_binary(OAUTH2_PROXY_MODULE, version, "oauth2-proxy",
                     f"-X {OAUTH2_PROXY_MODULE}/pkg/version.VERSION={version}")


def oauth2_proxy_image(reference: str) -> Image:
    binary = oauth2_proxy_binary(reference)

    def build(directory: Path) -> None:
        shutil.copy(binary, directory / "oauth2-proxy")
        (directory / "oauth2-proxy").chmod(0o755)

    root = stored_build(f"oauth2-proxy-{reference.rsplit(':', 1)[1]}",
                        hashlib.sha256(binary.read_bytes()).hexdigest(), build)
    return Image(reference, entrypoint=(str(root / "oauth2-proxy"),), cmd=(), user="65532", path=DEFAULT_PATH,
                 passwd=DISTROLESS_PASSWD, group=DISTROLESS_GROUP)


class Images:
    """The images of this node, resolved once each; any other reference fails its pod."""

    def __init__(self, collector_binary: Path | None = None):
        self.collector_binary = collector_binary
        self._resolved: dict[str, Image] = {}

    def __call__(self, reference: str) -> Image:
        if reference not in self._resolved:
            self._resolved[reference] = self._resolve(reference)
        return self._resolved[reference]

    def _resolve(self, reference: str) -> Image:
        if reference.startswith(MLFLOW_PREFIX):
            return mlflow_image(reference)
        if reference.startswith(POSTGRES_PREFIX):
            return postgres_image(reference)
        if reference.startswith(COLLECTOR_PREFIX):
            if self.collector_binary is None:
                raise ValueError(f"no collector binary on this node for image {reference!r}")
            return collector_image(reference, self.collector_binary)
        if reference.startswith(OAUTH2_PROXY_PREFIX):
            return oauth2_proxy_image(reference)
        raise ValueError(f"no stand-in for image {reference!r} on this node")


def deployed_mlflow_image() -> str:
    """The MLflow image a stack deploys by default (Pulumi.yaml)."""
    return project_defaults()["mlflow"]["image"]

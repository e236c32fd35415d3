#!/usr/bin/env bash
# Build the custom OpenTelemetry Collector (otelcol-mlflow) with the OpenTelemetry
# Collector Builder (OCB), caching everything under <repo>/.cache/otelcol (git-ignored).
#
#   collector/build.sh            # build if needed; prints the binary path as the last line
#
# The collector version is read from collector/builder-config.yaml (dist.version) -- the single
# source of truth. The builder is installed with
#   GOBIN=<repo>/.cache/otelcol/bin go install go.opentelemetry.io/collector/cmd/builder@v<version>
# and the collector is (re)built when <output_path>/<name> is missing, older than the manifest,
# or was built from a different manifest (sha256 stamp next to the binary).
#
# Environment:
#   OTELCOL_BUILD_JOBS  go build parallelism (-p); default: number of CPUs, capped at 4.
#   OTELCOL_FORCE=1     rebuild even if the binary looks up to date.
set -euo pipefail

log() { printf '[otelcol-build] %s\n' "$*" >&2; }
die() { printf '[otelcol-build] ERROR: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/.." && pwd)"
MANIFEST="${SCRIPT_DIR}/builder-config.yaml"
BUILDER_MODULE="go.opentelemetry.io/collector/cmd/builder"

[[ -f "${MANIFEST}" ]] || die "manifest not found: ${MANIFEST}"

# The manifest, read by a YAML parser (PyYAML, from requirements-dev.txt):
#   manifest dist     -> dist.version, dist.name, dist.output_path, dist.module, one per line
#   manifest modules  -> "<module> <version>" of every component and provider
manifest() {
  python3 - "${MANIFEST}" "$1" <<'EOF' || die "cannot read ${MANIFEST}: needs python3 with PyYAML (pip install -r requirements-dev.txt)"
import sys

import yaml

with open(sys.argv[1]) as stream:
    document = yaml.safe_load(stream)
if sys.argv[2] == "dist":
    dist = document.get("dist") or {}
    for key in ("version", "name", "output_path", "module"):
        print(dist.get(key) or "")
else:
    for section in ("receivers", "processors", "connectors", "exporters", "extensions", "providers"):
        for entry in document.get(section) or []:
            print(*entry["gomod"].split()[:2])
EOF
}

{ read -r VERSION; read -r DIST_NAME; read -r DECLARED_OUTPUT_PATH; read -r DIST_MODULE; } < <(manifest dist)
OUTPUT_PATH="${DECLARED_OUTPUT_PATH}"
[[ -n "${VERSION}" ]] || die "dist.version is not set in ${MANIFEST}"
[[ "${VERSION}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "dist.version '${VERSION}' is not X.Y.Z in ${MANIFEST}"
[[ -n "${DIST_NAME}" ]] || die "dist.name is not set in ${MANIFEST}"
[[ -n "${DIST_MODULE}" ]] || die "dist.module is not set in ${MANIFEST}"
[[ -n "${OUTPUT_PATH}" ]] || die "dist.output_path is not set in ${MANIFEST}"
[[ "${OUTPUT_PATH}" == /* ]] || OUTPUT_PATH="${REPO_ROOT}/${OUTPUT_PATH#./}"

EXPECTED_OUTPUT="${REPO_ROOT}/.cache/otelcol/${VERSION}"
[[ "${OUTPUT_PATH%/}" == "${EXPECTED_OUTPUT}" ]] ||
  die "dist.output_path must be .cache/otelcol/${VERSION} (got '${DECLARED_OUTPUT_PATH}'); keep it in sync with dist.version"

BIN_DIR="${REPO_ROOT}/.cache/otelcol/bin"
BUILDER="${BIN_DIR}/builder"
BINARY="${OUTPUT_PATH}/${DIST_NAME}"
STAMP="${BINARY}.manifest.sha256"

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | awk '{print $1}'
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | awk '{print $1}'
  else
    echo "unavailable"
  fi
}

builder_ok() {
  [[ -x "${BUILDER}" ]] && "${BUILDER}" version 2>&1 | grep -q "v${VERSION}\$"
}

collector_up_to_date() {
  [[ "${OTELCOL_FORCE:-0}" != "1" ]] || return 1
  [[ -x "${BINARY}" ]] || return 1
  [[ ! "${MANIFEST}" -nt "${BINARY}" ]] || return 1
  [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "$(sha256_of "${MANIFEST}")" ]] || return 1
}

if builder_ok && collector_up_to_date; then
  log "up to date: ${BINARY} (collector ${VERSION})"
  printf '%s\n' "${BINARY}"
  exit 0
fi

# ---- preflight: Go toolchain and module proxy ------------------------------------------------
# shellcheck source=../tools/go-preflight.sh
. "${REPO_ROOT}/tools/go-preflight.sh"
go_preflight "${BUILDER_MODULE}" "v${VERSION}" "the version required by the OCB ${VERSION} modules"
OTELCOL_BUILD_JOBS="$(go_build_jobs "${OTELCOL_BUILD_JOBS:-}")"
export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-p=${OTELCOL_BUILD_JOBS}"

# ---- builder ----------------------------------------------------------------------------------
if ! builder_ok; then
  log "installing ${BUILDER_MODULE}@v${VERSION} into ${BIN_DIR}"
  mkdir -p "${BIN_DIR}"
  GOBIN="${BIN_DIR}" go install "${BUILDER_MODULE}@v${VERSION}" ||
    die "go install ${BUILDER_MODULE}@v${VERSION} failed"
  builder_ok || die "installed builder does not report version v${VERSION}: $("${BUILDER}" version 2>&1 || true)"
fi

# ---- collector --------------------------------------------------------------------------------
# The builder's own `go mod tidy` also resolves the *test* dependencies of every package, and
# the module proxy refuses some test-only modules (e.g. pdatatest, extensionauthtest at 0.152.0).
# So: generate the sources, tidy with -e (tolerates unresolvable test-only modules), check that
# every component resolved to exactly the manifest's version, then let the builder compile.
# `go build` still fails on any module the binary itself needs.
# Up to 0.153 the builder writes go.mod along with the sources; from 0.154 on it skips go.mod
# under --skip-get-modules (cmd/builder internal/builder/main.go, Generate), so then this script
# writes it from the manifest: the components, the providers and otelcol at the release, the
# rest left to `go mod tidy`.
write_go_mod() {
  {
    printf '// Written by collector/build.sh from %s (the builder wrote none).\n\n' "${MANIFEST##*/}"
    printf 'module %s\n\ngo 1.25\n\nrequire (\n' "${DIST_MODULE}"
    while read -r module version; do printf '\t%s %s\n' "${module}" "${version}"; done < <(manifest modules)
    printf '\tgo.opentelemetry.io/collector/otelcol v%s\n)\n' "${VERSION}"
  } >"${OUTPUT_PATH}/go.mod"
}
if ! collector_up_to_date; then
  log "building ${DIST_NAME} ${VERSION} into ${OUTPUT_PATH} (go build -p ${OTELCOL_BUILD_JOBS}); ~5 minutes cold"
  mkdir -p "${OUTPUT_PATH}"
  rm -f "${BINARY}" "${STAMP}" "${OUTPUT_PATH}/go.mod"
  start=$(date +%s)
  (cd "${REPO_ROOT}" && "${BUILDER}" --config "${MANIFEST}" --skip-get-modules --skip-compilation) ||
    die "OCB could not generate the sources; manifest: ${MANIFEST}"
  if [[ ! -f "${OUTPUT_PATH}/go.mod" ]]; then
    log "the builder wrote no go.mod (--skip-get-modules, builder 0.154 and later): writing it from the manifest"
    write_go_mod
  fi
  tidy_log="${OUTPUT_PATH}/go-mod-tidy.log"
  (cd "${OUTPUT_PATH}" && go mod tidy -e) >"${tidy_log}" 2>&1 ||
    die "go mod tidy failed in ${OUTPUT_PATH}: $(tail -20 "${tidy_log}")"
  log "go mod tidy: $(grep -c ' tested by$' "${tidy_log}" || true) test-only imports unresolvable (see ${tidy_log})"
  while read -r module version; do
    if ! resolved="$(cd "${OUTPUT_PATH}" && go list -m -f '{{.Version}}' "${module}" 2>&1)"; then
      # The reason is in the tidy log, e.g. "<module>@<version>: reading <proxy URL>: 403 Forbidden".
      reason="$(grep -m1 -F "${module}@${version}: " "${tidy_log}" || true)"
      die "${module} ${version} is not in the module graph${reason:+: ${reason#go: }}
${resolved}"
    fi
    [[ "${resolved}" == "${version}" ]] ||
      die "${module} resolved to ${resolved}, the manifest says ${version}"
  done < <(manifest modules)
  (cd "${REPO_ROOT}" && "${BUILDER}" --config "${MANIFEST}" --skip-get-modules --skip-generate) ||
    die "OCB build failed (see output above); manifest: ${MANIFEST}"
  [[ -x "${BINARY}" ]] || die "builder finished but ${BINARY} was not produced"
  sha256_of "${MANIFEST}" >"${STAMP}"
  log "built ${BINARY} in $(( $(date +%s) - start ))s"
fi

"${BINARY}" --version >&2 || die "${BINARY} does not run"
printf '%s\n' "${BINARY}"

#!/usr/bin/env bash
# Build the real Prometheus server and promtool from the Go module github.com/prometheus/prometheus,
# caching everything under <repo>/.cache/prometheus/<module version> (git-ignored).
#
#   prometheus/build.sh           # build if needed; prints the directory holding `prometheus`
#                                 # and `promtool` as the last line of stdout (logs go to stderr)
#
# The module version (e.g. v0.316.0, which is Prometheus 3.16.0) is read from
# prometheus/version.txt -- the single source of truth, also read by the Python tests.
# The binaries are built with
#   GOBIN=<cache dir> go install github.com/prometheus/prometheus/cmd/{prometheus,promtool}@<version>
# (the module's go.mod has no replace directives, so `go install pkg@version` accepts it), with
# CGO_ENABLED=0 and the `netgo` tag like the upstream release (.promu.yml), but WITHOUT the
# `builtinassets` tag: the React UI is not compiled in (that needs npm), so the web pages are
# absent while the HTTP API (/api/v1/...), /metrics and the health endpoints work.
# They are (re)built when a binary is missing, or the stamp next to them does not match
# this script and the version (sha256).
#
# Environment:
#   PROMETHEUS_BUILD_JOBS  go build parallelism (-p); default: number of CPUs, capped at 4.
#   PROMETHEUS_FORCE=1     rebuild even if the binaries look up to date.
#   GOMODCACHE, GOCACHE, GOPROXY, GOTOOLCHAIN  honoured as usual by the go command.
set -euo pipefail

log() { printf '[prometheus-build] %s\n' "$*" >&2; }
die() { printf '[prometheus-build] ERROR: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/.." && pwd)"
VERSION_FILE="${SCRIPT_DIR}/version.txt"
MODULE="github.com/prometheus/prometheus"
PACKAGES=(cmd/prometheus cmd/promtool)

[[ -f "${VERSION_FILE}" ]] || die "version file not found: ${VERSION_FILE}"
VERSION="$(tr -d '[:space:]' <"${VERSION_FILE}")"
[[ "${VERSION}" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
  die "'${VERSION}' in ${VERSION_FILE} is not a module version vX.Y.Z (e.g. v0.316.0)"

OUT_DIR="${REPO_ROOT}/.cache/prometheus/${VERSION}"
STAMP="${OUT_DIR}/build.sha256"

sha256_stdin() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum | awk '{print $1}'
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 | awk '{print $1}'
  else
    echo "unavailable"
  fi
}
# What the binaries depend on: this script and the version.
recipe_hash() { { cat "${BASH_SOURCE[0]}"; printf 'version %s\n' "${VERSION}"; } | sha256_stdin; }

up_to_date() {
  [[ "${PROMETHEUS_FORCE:-0}" != "1" ]] || return 1
  local pkg
  for pkg in "${PACKAGES[@]}"; do [[ -x "${OUT_DIR}/${pkg##*/}" ]] || return 1; done
  [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "$(recipe_hash)" ]] || return 1
}

if up_to_date; then
  log "up to date: ${OUT_DIR} (${MODULE} ${VERSION})"
  printf '%s\n' "${OUT_DIR}"
  exit 0
fi

# ---- preflight: Go toolchain and module proxy ------------------------------------------------
# shellcheck source=../tools/go-preflight.sh
. "${REPO_ROOT}/tools/go-preflight.sh"
go_preflight "${MODULE}" "${VERSION}" "the version in ${MODULE}@${VERSION}'s go.mod"

# The module source: its go.mod names the Go it needs, its VERSION file the Prometheus release.
if ! download_json="$(go mod download -json "${MODULE}@${VERSION}" 2>&1)"; then
  die "go mod download ${MODULE}@${VERSION} failed:
${download_json}"
fi
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" <<<"${download_json}" | head -1; }
MODULE_DIR="$(json_field Dir)"
MODULE_GOMOD="$(json_field GoMod)"
[[ -d "${MODULE_DIR}" && -f "${MODULE_GOMOD}" ]] ||
  die "go mod download gave no module directory for ${MODULE}@${VERSION}:
${download_json}"

# `go install pkg@version` refuses a module whose go.mod has replace directives; say so up front.
if grep -Eq '^[[:space:]]*replace([[:space:]]|\()' "${MODULE_GOMOD}"; then
  die "${MODULE}@${VERSION}'s go.mod has replace directives, which 'go install pkg@version' refuses;
this script needs a build module for that version (see ${MODULE_GOMOD})"
fi

# Go version: with GOTOOLCHAIN=local an older go just fails, so name the fix.
GO_REQUIRED="$(awk '$1 == "go" {print $2; exit}' "${MODULE_GOMOD}")"
GO_LOCAL="$(go env GOVERSION)"; GO_LOCAL="${GO_LOCAL#go}"
if [[ -n "${GO_REQUIRED}" ]] &&
  [[ "$(printf '%s\n%s\n' "${GO_REQUIRED}" "${GO_LOCAL}" | sort -V | head -1)" != "${GO_REQUIRED}" ]] &&
  [[ "$(go env GOTOOLCHAIN)" == local* ]]; then
  die "${MODULE}@${VERSION} needs Go >= ${GO_REQUIRED}, this go is ${GO_LOCAL} and GOTOOLCHAIN=$(go env GOTOOLCHAIN);
export GOTOOLCHAIN=go1.27.3 (or any go${GO_REQUIRED} or newer that the module proxy serves) and retry"
fi

PROMETHEUS_RELEASE="$(tr -d '[:space:]' <"${MODULE_DIR}/VERSION" 2>/dev/null || true)"
[[ -n "${PROMETHEUS_RELEASE}" ]] || PROMETHEUS_RELEASE="${VERSION#v}"

PROMETHEUS_BUILD_JOBS="$(go_build_jobs "${PROMETHEUS_BUILD_JOBS:-}")"
export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-p=${PROMETHEUS_BUILD_JOBS}"
# Static, pure-Go binaries like the upstream release (promu builds with cgo off).
export CGO_ENABLED=0

# ---- build ------------------------------------------------------------------------------------
# `--version` prints what the upstream build stamps in with -X (.promu.yml); without it, blank.
VERSION_PKG="github.com/prometheus/common/version"
LDFLAGS="-X ${VERSION_PKG}.Version=${PROMETHEUS_RELEASE} -X ${VERSION_PKG}.BuildUser=prometheus/build.sh"

targets=()
for pkg in "${PACKAGES[@]}"; do targets+=("${MODULE}/${pkg}@${VERSION}"); done

log "building prometheus and promtool ${PROMETHEUS_RELEASE} (${MODULE}@${VERSION}) into ${OUT_DIR}" \
  "(go install -p ${PROMETHEUS_BUILD_JOBS}, tags netgo, no builtinassets); ~5-10 minutes cold"
mkdir -p "${OUT_DIR}"
for pkg in "${PACKAGES[@]}"; do rm -f "${OUT_DIR}/${pkg##*/}"; done
rm -f "${STAMP}"
start=$(date +%s)
GOBIN="${OUT_DIR}" go install -trimpath -tags netgo -ldflags "${LDFLAGS}" "${targets[@]}" ||
  die "go install ${targets[*]} failed (see output above)"
for pkg in "${PACKAGES[@]}"; do
  binary="${OUT_DIR}/${pkg##*/}"
  [[ -x "${binary}" ]] || die "go install finished but ${binary} was not produced"
  "${binary}" --version >&2 || die "${binary} does not run"
done
recipe_hash >"${STAMP}"
log "built ${OUT_DIR}/{prometheus,promtool} in $(( $(date +%s) - start ))s"

printf '%s\n' "${OUT_DIR}"

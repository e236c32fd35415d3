# Sourced by collector/build.sh and prometheus/build.sh, which define log() and die().
#
#   go_preflight MODULE VERSION WHAT
# stops the build, saying why, when Go is missing, the module proxy does not answer, or it does not
# serve MODULE@VERSION; WHAT names the Go version the build needs, for the message.

go_preflight() {
  local module="$1" version="$2" what="$3" probe_out
  command -v go >/dev/null 2>&1 ||
    die "'go' not found on PATH. Install Go (>= ${what}, see https://go.dev/dl/) and retry."
  log "using $(go version) ($(command -v go))"
  log "checking Go module proxy (GOPROXY=$(go env GOPROXY)) for ${module}@${version}"
  # `-versions` always asks the proxy (no module-cache shortcut), so this really tests connectivity.
  if ! probe_out="$(_go_probe go list -m -versions "${module}" 2>&1)"; then
    die "cannot reach the Go module proxy (GOPROXY=$(go env GOPROXY)):
${probe_out}"
  fi
  if ! probe_out="$(_go_probe go list -m "${module}@${version}" 2>&1)"; then
    die "${module}@${version} is not available from the Go module proxy:
${probe_out}"
  fi
}

_go_probe() {
  if command -v timeout >/dev/null 2>&1; then timeout 120 "$@"; else "$@"; fi
}

# go_build_jobs JOBS: prints the `go build -p` parallelism: JOBS if set (the caller's env override),
# else one package compile per CPU, capped at 4 (each can take ~1-2 GiB).
go_build_jobs() {
  local cpus
  if [[ -n "$1" ]]; then printf '%s\n' "$1"; return; fi
  cpus="$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 2)"
  printf '%s\n' $(( cpus > 4 ? 4 : cpus ))
}

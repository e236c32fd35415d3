#!/usr/bin/env bash
# engine/build.sh -- the real Pulumi engine and a real Kubernetes control plane, built from source, for
# tests/engine (`pulumi preview/up/destroy` of this program against kube-apiserver on loopback).
#
# The Pulumi versions come from the project's requirements.txt, their one source: the exact pins of pulumi,
# pulumi-kubernetes and pulumi-random there are the CLI and providers built here. The script stops, naming
# both files, when requirements.txt does not pin them exactly or when pulumi-sources.tar.gz (its VERSIONS
# file) holds the source of other releases. `build.sh versions` prints what it builds and stops.
#
# Builds into $ENGINE_DIR (default <project>/.cache/engine, git-ignored):
#   bin/pulumi, bin/pulumi-language-python(+ -exec), bin/pulumi-resource-pulumi-python   (CLI = the pulumi pin)
#   bin/pulumi-resource-kubernetes, bin/pulumi-resource-random                           (their SDKs' pins)
#   bin/kube-apiserver, bin/kube-controller-manager (1.32.13)
#   venv/   the program's requirements.txt (so the SDKs of those providers)
# and prints the path of $ENGINE_DIR last. etcd comes from Debian (`etcd-server`), installed here when missing.
#
# Each step is skipped when its outputs exist and were built from the same recipe (a stamp holds the hash of the
# three Pulumi versions, this script, the sources tarball and the stub; for the venv also requirements.txt);
# FORCE=1 rebuilds. Go steps need Go >= 1.26 and the Go
# module proxy, the python step a PyPI index: without them the script stops at once, saying which.
#
# Sources: pulumi-sources.tar.gz holds, unchanged, the upstream files the Go module proxy refuses to serve (see
# engine/README.md); everything else comes from the proxy at the exact versions pinned below.
set -euo pipefail

KUBE_VERSION=1.32.13
KUBE_STAGING_VERSION=0.32.13
# The proxy refuses these five staging modules at 0.32.11-0.32.13; only kube-controller-manager links them.
KUBE_STAGING_FALLBACK_VERSION=0.32.2
KUBE_STAGING_FALLBACK_MODULES="csi-translation-lib kube-controller-manager endpointslice cri-client kube-scheduler"
# pulumi-kubernetes 4.32.0 builds against pkg/sdk 3.245.0 (its pinned 3.243.0 is refused; >= 3.250 changed pkg/gen).
KUBERNETES_PROVIDER_PULUMI_SDK=3.245.0
GO_MINIMUM=1.26

ENGINE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(dirname "$ENGINE")

fail() { echo "engine/build.sh: $*" >&2; exit 1; }
say() { echo "[engine] $*" >&2; }

# The Pulumi versions: requirements.txt's exact pins, which the tarball's source must be of.
pin_in() {  # pin_in PACKAGE: its version in the text on stdin, from a `PACKAGE==VERSION` line
  sed -nE "s/^[[:space:]]*$1[[:space:]]*==[[:space:]]*([0-9][0-9A-Za-z.+!-]*)[[:space:]]*(#.*)?$/\1/p" | head -1
}
[ -f "$PROJECT/requirements.txt" ] || fail "$PROJECT/requirements.txt is missing: it pins the Pulumi versions built here"
SOURCES_VERSIONS=$(tar -xzOf "$ENGINE/pulumi-sources.tar.gz" VERSIONS 2>/dev/null) \
  || fail "engine/pulumi-sources.tar.gz has no VERSIONS file naming the releases of its source (see engine/README.md)"
versions_of() {  # versions_of PACKAGE: requirements.txt's pin, checked against the tarball's VERSIONS
  local pinned sources
  pinned=$(pin_in "$1" < "$PROJECT/requirements.txt")
  sources=$(pin_in "$1" <<< "$SOURCES_VERSIONS")
  [ -n "$pinned" ] || fail "requirements.txt must pin $1 exactly ($1==X.Y.Z): the engine suite builds and tests one" \
    "version, the one users install (engine/pulumi-sources.tar.gz holds the source of $1==${sources:-?})"
  [ "$pinned" = "$sources" ] || fail "requirements.txt pins $1==$pinned but engine/pulumi-sources.tar.gz holds the" \
    "source of $1==${sources:-nothing} (its VERSIONS file): pin $1==$sources in requirements.txt, or bump on" \
    "purpose by putting that release's source in the tarball (engine/README.md)"
  echo "$pinned"
}
PULUMI_VERSION=$(versions_of pulumi)
KUBERNETES_PROVIDER_VERSION=$(versions_of pulumi-kubernetes)
RANDOM_PROVIDER_VERSION=$(versions_of pulumi-random)
if [ "${1:-}" = versions ]; then
  printf 'pulumi==%s\npulumi-kubernetes==%s\npulumi-random==%s\n' \
    "$PULUMI_VERSION" "$KUBERNETES_PROVIDER_VERSION" "$RANDOM_PROVIDER_VERSION"
  exit 0
fi

ENGINE_DIR=${ENGINE_DIR:-$PROJECT/.cache/engine}
mkdir -p "$ENGINE_DIR"; ENGINE_DIR=$(cd "$ENGINE_DIR" && pwd)
BIN=$ENGINE_DIR/bin WORK=$ENGINE_DIR/work LOGS=$ENGINE_DIR/logs STAMPS=$ENGINE_DIR/stamps
mkdir -p "$BIN" "$WORK" "$LOGS" "$STAMPS"
# The work tree may sit inside this repository: no VCS stamping, no workspace, no toolchain download.
export GOFLAGS="-mod=mod -buildvcs=false" GOWORK=off GOTOOLCHAIN=local

# A bump of a Pulumi pin (with the tarball it needs) changes every Go step's recipe, so all of them rebuild.
RECIPE=$( { echo "$PULUMI_VERSION $KUBERNETES_PROVIDER_VERSION $RANDOM_PROVIDER_VERSION"
            cat "$0" "$ENGINE/pulumi-sources.tar.gz" "$ENGINE"/stubs/pulumi-language-dotnet/go.mod \
                "$ENGINE"/stubs/pulumi-language-dotnet/codegen/stub.go; } | sha256sum | cut -c1-16)
# The venv follows the program's requirements too; a change there rebuilds only it.
PYTHON_RECIPE=$(sha256sum < "$PROJECT/requirements.txt" | cut -c1-16)-$RECIPE
recipe_of() { if [ "$1" = python ]; then echo "$PYTHON_RECIPE"; else echo "$RECIPE"; fi; }

require_go() {
  command -v go >/dev/null || fail "Go is not installed; the engine is built from Go modules (Go >= $GO_MINIMUM)"
  local version; version=$(go env GOVERSION); version=${version#go}
  [ "$(printf '%s\n%s\n' "$GO_MINIMUM" "$version" | sort -V | head -1)" = "$GO_MINIMUM" ] \
    || fail "Go $version is too old: pulumi-kubernetes $KUBERNETES_PROVIDER_VERSION needs Go >= $GO_MINIMUM"
  local proxy; proxy=$(go env GOPROXY); proxy=${proxy%%[,|]*}
  case $proxy in ""|off|direct) fail "GOPROXY is '$(go env GOPROXY)': the build needs a Go module proxy";; esac
  curl -sf -o /dev/null --max-time 30 "$proxy/github.com/pulumi/pulumi/sdk/v3/@v/v$PULUMI_VERSION.info" \
    || fail "the Go module proxy $proxy does not answer (github.com/pulumi/pulumi/sdk/v3@v$PULUMI_VERSION)"
}

sources() {  # the tarball, unpacked once per recipe
  local dir=$WORK/upstream
  if [ "$(cat "$dir/.recipe" 2>/dev/null)" != "$RECIPE" ]; then
    rm -rf "$dir"; mkdir -p "$dir"; tar -C "$dir" -xzf "$ENGINE/pulumi-sources.tar.gz"; echo "$RECIPE" > "$dir/.recipe"
  fi
  echo "$dir"
}

build_cli() {  # the CLI from the proxy; the Python language host's main.go from the tarball (its module is refused)
  local upstream host=$WORK/cli; upstream=$(sources)
  local python=$upstream/pulumi/sdk/python
  rm -rf "$host"; mkdir -p "$host/cmd/pulumi-language-python"
  cp "$python/cmd/pulumi-language-python/main.go" "$host/cmd/pulumi-language-python/"
  # The host's go.mod without its in-repository replaces, pkg and sdk at the release; go.sum: the host's and the CLI's.
  sed -e 's#^module .*#module engine.local/cli#' -e '/pulumi\/pkg\/v3 => /d' -e '/pulumi\/sdk\/v3 => /d' \
      -e "s#\(github.com/pulumi/pulumi/pkg/v3\) v3[.0-9]*#\1 v$PULUMI_VERSION#" \
      -e "s#\(github.com/pulumi/pulumi/sdk/v3\) v3[.0-9]*#\1 v$PULUMI_VERSION#" \
      "$python/cmd/pulumi-language-python/go.mod" > "$host/go.mod"
  sort -u "$python/cmd/pulumi-language-python/go.sum" "$upstream/pulumi/pkg/go.sum" > "$host/go.sum"
  printf '//go:build tools\n\npackage main\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' > "$host/tools.go"
  local ldflags="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION"
  (cd "$host" && go mod tidy \
    && go build -trimpath -ldflags "$ldflags" -o "$BIN/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
    && go build -trimpath -ldflags "$ldflags" -o "$BIN/pulumi-language-python" ./cmd/pulumi-language-python)
  # The executor beside the host ("missing executor" otherwise) and the dynamic-provider plugin.
  install -m 755 "$python/cmd/pulumi-language-python-exec" "$python/dist/pulumi-resource-pulumi-python" "$BIN/"
}

build_kube() {  # kube-apiserver and kube-controller-manager from k8s.io/kubernetes, staging modules pinned
  local dir=$WORK/kube
  rm -rf "$dir"; mkdir -p "$dir"
  printf 'module engine.local/kube\n\ngo 1.23.0\n' > "$dir/go.mod"
  (cd "$dir" && go mod download "k8s.io/kubernetes@v$KUBE_VERSION")
  local upstream_mod; upstream_mod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$KUBE_VERSION.mod
  {
    # kubernetes' own Go runtime defaults, and every `=> ./staging/...` replace turned into a released version.
    printf 'module engine.local/kube\n\ngo 1.23.0\n\ngodebug default=go1.23\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' \
      "$KUBE_VERSION"
    sed -nE "s#^\s*(k8s.io/[^ ]+) => ./staging/src/.*#\t\1 => \1 v$KUBE_STAGING_VERSION#p" "$upstream_mod"
    echo ")"
  } > "$dir/go.mod"
  local module
  for module in $KUBE_STAGING_FALLBACK_MODULES; do
    sed -i "s#^\tk8s.io/$module => k8s.io/$module v.*#\tk8s.io/$module => k8s.io/$module v$KUBE_STAGING_FALLBACK_VERSION#" \
      "$dir/go.mod"
  done
  printf '//go:build tools\n\npackage main\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n)\n' \
    > "$dir/tools.go"
  local minor ldflags="-s -w" package
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do  # else /version says v0.0.0-master
    ldflags="$ldflags -X $package.gitVersion=v$KUBE_VERSION -X $package.gitMajor=1 -X $package.gitMinor=$minor"
    ldflags="$ldflags -X $package.gitTreeState=clean"
  done
  (cd "$dir" && go mod tidy \
    && go build -trimpath -ldflags "$ldflags" -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver \
    && go build -trimpath -ldflags "$ldflags" -o "$BIN/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager)
}

build_random() {  # the bridged random provider; its tfgen dependency needs a stub and two version pins
  local upstream dir=$WORK/pulumi-random; upstream=$(sources)
  rm -rf "$dir" "$WORK/stubs"; cp -r "$upstream/pulumi-random" "$dir"; cp -r "$ENGINE/stubs" "$WORK/stubs"
  cat >> "$dir/provider/go.mod" <<EOF

// refused by the proxy; see engine/stubs
replace github.com/pulumi/pulumi-dotnet/pulumi-language-dotnet/v3 => $WORK/stubs/pulumi-language-dotnet
// the pinned pseudo-version is refused; 1.37.0 does not compile against the pkg it is resolved with; 1.38.0 does
replace github.com/pulumi/pulumi-yaml => github.com/pulumi/pulumi-yaml v1.38.0
// what pulumi-yaml 1.38.0's pkg needs (1.32.0 lacks ResolveDocRef)
replace github.com/pulumi/pulumi-java => github.com/pulumi/pulumi-java v1.33.0
EOF
  (cd "$dir/provider/cmd/pulumi-resource-random" && VERSION=$RANDOM_PROVIDER_VERSION go run generate.go)
  (cd "$dir/provider" && go build -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi-random/provider/v4/pkg/version.Version=$RANDOM_PROVIDER_VERSION" \
    -o "$BIN/pulumi-resource-random" ./cmd/pulumi-resource-random)
}

build_kubernetes() {  # pulumi-resource-kubernetes; its .NET SDK generator is cut out (its module is refused)
  local upstream dir=$WORK/pulumi-kubernetes; upstream=$(sources)
  rm -rf "$dir"; cp -r "$upstream/pulumi-kubernetes" "$dir"
  local provider=$dir/provider
  sed -i '/pulumi-dotnet\/pulumi-language-dotnet/d' "$provider/go.mod"
  python3 - "$provider/cmd/pulumi-gen-kubernetes/main.go" <<'EOF'
import re, sys
path = sys.argv[1]
source = open(path).read()
source = "\n".join(line for line in source.split("\n") if "pulumi-dotnet/pulumi-language-dotnet" not in line)
source, count = re.subn(r"func writeDotnetClient\((.*?)\) \{\n.*?\n\}\n",
                        lambda m: "func writeDotnetClient(%s) {\n\tpanic(\"no .NET SDK in this build\")\n}\n" % m.group(1),
                        source, count=1, flags=re.S)
if count != 1:
    sys.exit("writeDotnetClient not found in " + path)
open(path, "w").write(source)
EOF
  cat >> "$provider/go.mod" <<EOF

// the pinned pseudo-version is refused; 0.71.0 needs k8s.io/api/autoscaling/v2beta2 (gone); 0.76.0 has the same API
replace github.com/fluxcd/pkg/ssa => github.com/fluxcd/pkg/ssa v0.76.0
replace github.com/pulumi/pulumi/pkg/v3 => github.com/pulumi/pulumi/pkg/v3 v$KUBERNETES_PROVIDER_PULUMI_SDK
replace github.com/pulumi/pulumi/sdk/v3 => github.com/pulumi/pulumi/sdk/v3 v$KUBERNETES_PROVIDER_PULUMI_SDK
EOF
  [ -s "$provider/cmd/pulumi-resource-kubernetes/schema.json" ] || fail "the tarball lacks the provider's schema.json"
  (cd "$provider/cmd/pulumi-resource-kubernetes" && VERSION=$KUBERNETES_PROVIDER_VERSION go run generate.go)
  (cd "$provider" && go build -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$KUBERNETES_PROVIDER_VERSION" \
    -o "$BIN/pulumi-resource-kubernetes" ./cmd/pulumi-resource-kubernetes)
}

build_python() {  # the program's own requirements: their pinned SDKs are those of the providers built here
  local venv=$ENGINE_DIR/venv
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$PROJECT/requirements.txt" \
    || fail "pip could not install requirements.txt (is a PyPI index reachable?)"
}

outputs_cli="pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python"
outputs_kube="kube-apiserver kube-controller-manager"
outputs_random="pulumi-resource-random"
outputs_kubernetes="pulumi-resource-kubernetes"
outputs_python="../venv/bin/python"

built() {  # built STEP: outputs present and stamped with this recipe
  [ "${FORCE:-0}" = 1 ] && return 1
  [ "$(cat "$STAMPS/$1" 2>/dev/null)" = "$(recipe_of "$1")" ] || return 1
  local outputs="outputs_$1" output
  for output in ${!outputs}; do [ -x "$BIN/$output" ] || return 1; done
}

steps=${*:-cli kube random kubernetes python}
pending=""
for step in $steps; do
  case $step in cli|kube|random|kubernetes|python) ;; *) fail "unknown step $step (cli kube random kubernetes python)";; esac
  built "$step" || pending="$pending $step"
done
case $pending in *cli*|*kube*|*random*|*kubernetes*) require_go;; esac
command -v etcd >/dev/null || {
  say "etcd missing: installing Debian's etcd-server"
  command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] || fail "etcd is not installed (Debian: apt-get install etcd-server)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; } \
    || fail "apt-get could not install etcd-server"
}

started=$(date +%s)
for step in $steps; do
  if built "$step"; then say "$step: up to date"; continue; fi
  say "$step: building (log: $LOGS/$step.log)"
  began=$(date +%s)
  if ! ( set -e; "build_$step" ) > "$LOGS/$step.log" 2>&1; then
    tail -30 "$LOGS/$step.log" >&2
    fail "step $step failed after $(( $(date +%s) - began ))s; full log: $LOGS/$step.log"
  fi
  recipe_of "$step" > "$STAMPS/$step"
  say "$step: built in $(( $(date +%s) - began ))s"
done
say "engine ready in $(( $(date +%s) - started ))s"
echo "$ENGINE_DIR"

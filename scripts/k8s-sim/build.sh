#!/usr/bin/env bash
# A TEST HARNESS, not part of the product: builds a real Kubernetes v1.20.2 control plane
# (kube-apiserver, kube-controller-manager, kube-scheduler) plus etcd 3.4 and kubectl 1.20 from
# Debian bookworm's own packages, once per machine, into a cache outside the clone:
#   ${LLMOPS_CACHE:-~/.cache/llmops}/k8s-sim/v1.20.2/bin
# Debian's packages are the only route here: the Go module proxy and release pages are not
# reachable, and bookworm's orig tarball is the full upstream tree with vendor/.
# Warm (binaries present): returns at once. Cold: about 10 minutes on 2 cores.
# Prints the bin directory on its last line.
set -euo pipefail
K8S_VERSION=1.20.2
DEB_K8S=1.20.5+really1.20.2-1.1+deb12u1
DEB_ETCD=3.4.23-4+b4
ROOT=${LLMOPS_CACHE:-$HOME/.cache/llmops}/k8s-sim/v$K8S_VERSION
BIN=$ROOT/bin
BINARIES=(etcd kubectl kube-apiserver kube-controller-manager kube-scheduler)

complete() { for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if complete; then echo "$BIN"; exit 0; fi

# One build at a time per machine (two CI clones may start together).
mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9
if complete; then echo "$BIN"; exit 0; fi

N="nice -n 19"
W=$ROOT/work
rm -rf "$W" && mkdir -p "$W"/{apt/state/lists/partial,apt/cache/archives/partial,apt/etc,debs/x,src,tools,logs}
export GOCACHE=$ROOT/gocache
echo "k8s-sim: building Kubernetes v$K8S_VERSION from Debian sources into $BIN (about 10 min cold)" >&2

# A private apt configuration: the system's package state is left untouched, and no root needed.
cat > "$W/apt/etc/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
EOF
cat > "$W/apt/apt.conf" <<EOF
Dir::State "$W/apt/state"; Dir::State::status "/var/lib/dpkg/status"; Dir::Cache "$W/apt/cache";
Dir::Etc::SourceList "$W/apt/etc/sources.list"; Dir::Etc::SourceParts "/nonexistent";
Acquire::Languages "none";
EOF
export APT_CONFIG=$W/apt/apt.conf
$N apt-get -q update >"$W/logs/apt-update.log" 2>&1

cd "$W/src"
$N apt-get -q source --download-only "kubernetes=$DEB_K8S" >"$W/logs/apt-source.log" 2>&1
cd "$W/debs"
$N apt-get -q download golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev \
  "etcd-server=$DEB_ETCD" "kubernetes-client=$DEB_K8S" >"$W/logs/apt-download.log" 2>&1
for d in golang-1.19-*.deb; do dpkg -x "$d" go119; done
dpkg -x golang-github-modern-go-reflect2-dev_*.deb x/reflect2
dpkg -x etcd-server_*.deb x/etcd
dpkg -x kubernetes-client_*.deb x/kubectl

cd "$W/src"
$N tar xzf kubernetes_*.orig.tar.gz
K=$W/src/kubernetes-$K8S_VERSION
# The vendored reflect2 v1.0.1 crashes at run time on Go >= 1.18; Debian's v1.0.2 does not.
R=$K/vendor/github.com/modern-go/reflect2
rm -f "$R"/*.go "$R"/*.s
cp "$W"/debs/x/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2/*.{go,s} "$R/"

# GOPATH mode, as Kubernetes 1.20's own hack/lib/init.sh builds (module mode refuses vendor/).
export GOROOT=$W/debs/go119/usr/lib/go-1.19
export PATH=$GOROOT/bin:$PATH GOPATH=$W/gopath GO111MODULE=off CGO_ENABLED=0 GOFLAGS= \
  GOPROXY=off GOTOOLCHAIN=local
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$K" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"

# The generated OpenAPI definitions are not in the tarball (`make` generates them).
$N go build -o "$W/tools/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
DIRS=$(find -H . \( -not \( \( -path ./_\* -o -path ./.\* -o -path ./vendor \) -prune \) \) \
    -type f -name '*.go' \
  | sed 's|^./staging/src|vendor|; s|^./||' | xargs grep -l '^// *+k8s:' 2>/dev/null \
  | grep -v '^vendor/k8s.io/code-generator/\|^vendor/k8s.io/sample-apiserver/' \
  | xargs grep -l '+k8s:openapi-gen=' | xargs -n1 dirname | LC_ALL=C sort -u \
  | sed 's|^|k8s.io/kubernetes/|' | paste -sd,)
$N "$W/tools/openapi-gen" --logtostderr -i "$DIRS" -p k8s.io/kubernetes/pkg/generated/openapi \
  -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
  -r "$W/logs/violations.report" >"$W/logs/openapi-gen.log" 2>&1

STAGE=$ROOT/bin.partial
rm -rf "$STAGE" && mkdir -p "$STAGE"
LDF="-s -w"
for p in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
         k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=20"
  LDF="$LDF -X $p.gitTreeState=clean -X $p.buildDate=2021-01-13T00:00:00Z"
done
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  echo "k8s-sim: go build $c" >&2
  $N go build -trimpath -ldflags "$LDF" -o "$STAGE/$c" "./cmd/$c"
done
cp "$W/debs/x/etcd/usr/bin/etcd" "$W/debs/x/kubectl/usr/bin/kubectl" "$STAGE/"
# Put in place only when complete: an interrupted build leaves no half a cache.
rm -rf "$BIN" && mv "$STAGE" "$BIN"
# The sources, toolchain and GOPATH are only needed to build (about 2 GB); the Go build
# cache stays, so a rebuild (a new version of this script) takes seconds, not minutes.
rm -rf "$W"
echo "$BIN"

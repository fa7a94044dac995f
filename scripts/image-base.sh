#!/usr/bin/env bash
# Make the local stand-in for the Dockerfile's base image, for `make container-check` only.
#
# Nothing can be pulled on the CI machine, so the Dockerfile's FROM image is replaced by
# a Debian bookworm root made with debootstrap and imported into podman under the very
# name the Dockerfile uses. Debian bookworm ships Python 3.11 (3.11.2), the same minor
# version as the real base (python:3.11-slim-bookworm), which is all the build relies on:
# `python3 -m venv` and pip inside the venv. Users' builds use the real, pinned image.
#
# The root file system is cached as a tarball outside the repository and reused, so only
# the first run pays for debootstrap. Safe to re-run.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim-bookworm}"
CACHE_DIR="${MLOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlops-kserve}"
TARBALL="$CACHE_DIR/bookworm-python3.11-rootfs.tar"
# Packages the build needs from the base: an interpreter, venv (ensurepip) and CA roots.
PACKAGES="python3,python3-venv,ca-certificates"

log() { printf '[image-base] %s\n' "$*" >&2; }

# The Debian mirror apt is already configured with on this machine (deb822 or one-line
# format); debootstrap falls back to its own default when none is found.
apt_mirror() {
  local src
  for src in /etc/apt/sources.list.d/*.sources; do
    [ -f "$src" ] || continue
    awk '/^URIs:/ {print $2; exit}' "$src" | grep -v -- '-security' && return 0
  done
  if [ -f /etc/apt/sources.list ]; then
    awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list
  fi
}

if podman image exists "$BASE_IMAGE"; then
  log "$BASE_IMAGE is already in podman's store (stand-in reused)"
  exit 0
fi

if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }
  mkdir -p "$CACHE_DIR"
  root="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  mirror="$(apt_mirror || true)"
  log "debootstrap bookworm (minbase + $PACKAGES) into $root"
  # shellcheck disable=SC2086
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" $mirror >&2
  # Keep the stand-in as small as the slim image: no apt lists, docs or caches.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" --numeric-owner -cf "$TARBALL.partial" .
  mv "$TARBALL.partial" "$TARBALL"
  log "cached the root file system in $TARBALL"
fi

log "importing $TARBALL as $BASE_IMAGE"
podman import --change 'CMD ["python3"]' "$TARBALL" "$BASE_IMAGE" >/dev/null
log "done: $(podman image inspect --format '{{.Id}}' "$BASE_IMAGE")"

#!/usr/bin/env bash
# `make container-check`: build the project's image with podman, then run the chart's own
# workloads as real containers started from their rendered pod specs (tests/containers).
#
# Nothing is pulled: the Dockerfile's base image is a local Debian stand-in
# (scripts/image-base.sh), cached, and the build runs with `--isolation chroot`. Containers
# run with runc, the cgroupfs manager and rlimits within the hard limit (the flags are in
# tests/containers/pod_runner.py; docs/kubernetes.md, "The container tier").
# pip inside the build reads this machine's pip configuration (config files and PIP_*
# variables), handed in as a build secret so it never lands in a layer.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-kind.local/mlops-kserve:$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}"
PYTHON="${PYTHON:-.venv/bin/python}"
PYTEST_ARGS="${PYTEST_ARGS:-}"

log() { printf '[container-check] %s\n' "$*" >&2; }
seconds() { date +%s; }

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
if ((${#missing[@]})); then
  # A user's machine without podman skips the tier; CI must have it (.ci/run installs it).
  case "${CI:-}" in
    1|true|yes) log "missing: ${missing[*]} (Debian packages of the same names)"; exit 1 ;;
    *) log "skipped: ${missing[*]} not installed (Debian: apt-get install podman runc)"; exit 0 ;;
  esac
fi
[ -f README.md ] || { log "README.md is missing: pyproject.toml names it as the readme"; exit 1; }

start=$(seconds)
scripts/image-base.sh
base_done=$(seconds)

# pip's effective configuration as an INI file: `pip config list` prints every setting from
# its files and PIP_* variables as `section.key='value'` (`:env:` for the variables).
pip_conf="$(mktemp)"
trap 'rm -f "$pip_conf"' EXIT
"$PYTHON" -m pip config list 2>/dev/null | "$PYTHON" -c '
import collections, re, sys
sections = collections.defaultdict(dict)
for line in sys.stdin:
    match = re.match(r"^([^.]+)\.([^=]+)=(.*)$", line.strip())
    if match:
        section, key, value = match.groups()
        section = "global" if section == ":env:" else section
        sections[section][key] = value.strip("\x27\"")
for section, items in sections.items():
    print(f"[{section}]")
    print("\n".join(f"{key} = {value}" for key, value in items.items()))
' >"$pip_conf"

# Local folders and files that configuration names (a file:// index, find-links, a
# constraints file, a CA bundle) are mounted into the build read-only at the same paths,
# so pip finds there what it finds on the host.
volumes=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
while read -r location; do
  location="${location#file://}"
  location="${location%/simple}"
  if [[ "$location" == /* ]] && [ -e "$location" ] && [[ "$location" != /etc/ssl/certs/* ]]; then
    volumes+=(-v "$location:$location:ro")
  fi
done < <(sed -n 's/^\(index-url\|extra-index-url\|find-links\|constraint\|cert\) = //p' "$pip_conf" | tr ' ' '\n' | sort -u)

previous="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
log "building $IMAGE"
podman build --isolation chroot --pull=never --layers \
  --secret "id=pipconf,src=$pip_conf" "${volumes[@]}" \
  -t "$IMAGE" -f Dockerfile . >&2
built=$(seconds)
current="$(podman image inspect --format '{{.Id}}' "$IMAGE")"
# The image this tag named before is untagged now: drop it (the layer cache stays).
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi
log "image size: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

log "running the chart's workloads as containers (tests/containers)"
# shellcheck disable=SC2086
MLOPS_IMAGE="$IMAGE" "$PYTHON" -m pytest tests/containers -p no:cacheprovider -ra $PYTEST_ARGS
done_at=$(seconds)

log "timings: base $((base_done - start))s, build $((built - base_done))s, checks $((done_at - built))s, total $((done_at - start))s"

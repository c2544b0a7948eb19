#!/usr/bin/env bash
# Builds the dmqd image (deploy/Dockerfile) from static binaries built here:
# no base image is pulled. Usage: scripts/image.sh [TAG] (default dmq/dmqd:dev).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-dmq/dmqd:dev}
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cd "$root"
for cmd in dmqd dmqctl; do
  CGO_ENABLED=0 go build -buildvcs=auto -trimpath -ldflags "-s -w" -o "$context/$cmd" "./cmd/$cmd"
done
mkdir -p "$context/data"
cp deploy/Dockerfile "$context/Dockerfile"
docker build --quiet --tag "$tag" "$context" >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$tag")
echo "built $tag: $((size / 1024 / 1024)) MiB ($size bytes)"

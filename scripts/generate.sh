#!/usr/bin/env bash
# Regenerates gen/ from proto/. Reproducible: protoc comes from Debian's
# protobuf-compiler (3.21.12), the Go plugins are the `tool` entries pinned in
# go.mod, and google/api/{annotations,http}.proto come from the Go module
# grpc-gateway at a pinned version, fetched through the Go module proxy and
# checked against its pinned hash (third-party files are never committed, and
# no npm is needed: the project's machines cannot reach it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

protoc_version_wanted="libprotoc 3.21.12"
googleapis_module="github.com/grpc-ecosystem/grpc-gateway"
googleapis_version="v1.16.0"
googleapis_sum="h1:gmcG1KaJ57LophUzW0Hy8NmPhnMZb4M0+kPpLofRdBo="

if ! command -v protoc >/dev/null; then
  echo "protoc not found: install Debian's protobuf-compiler (apt-get install -y protobuf-compiler)" >&2
  exit 1
fi
if [ "$(protoc --version)" != "$protoc_version_wanted" ]; then
  echo "protoc is '$(protoc --version)', want '$protoc_version_wanted': generated headers would differ" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

download=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "${googleapis_module}@${googleapis_version}")
sum=$(printf '%s' "$download" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",*$/\1/p')
dir=$(printf '%s' "$download" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
if [ "$sum" != "$googleapis_sum" ]; then
  echo "${googleapis_module}@${googleapis_version} has sum '$sum', want '$googleapis_sum'" >&2
  exit 1
fi
mkdir -p "$work/include/google/api"
cp "$dir/third_party/googleapis/google/api/annotations.proto" "$dir/third_party/googleapis/google/api/http.proto" "$work/include/google/api/"

go build -o "$work/bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$work/bin/protoc-gen-connect-go" connectrpc.com/connect/cmd/protoc-gen-connect-go

# Generate beside the tree, then swap: a failing protoc leaves gen/ as it was.
mkdir -p "$work/gen"
mapfile -t protos < <(cd proto && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
(cd proto && PATH="$work/bin:$PATH" protoc \
  -I . -I "$work/include" -I /usr/include \
  --go_out="$work/gen" --go_opt=paths=source_relative \
  --connect-go_out="$work/gen" --connect-go_opt=paths=source_relative \
  "${protos[@]}")
rm -rf gen
mv "$work/gen" gen
echo "generated $(find gen -name '*.go' | wc -l) files in gen"

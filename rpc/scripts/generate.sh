#!/usr/bin/env bash
# Regenerates rpc/gen from rpc/proto. Reproducible: protoc comes from Debian's
# protobuf-compiler (3.21.12), the Go plugins are the `tool` entries pinned in
# go.mod, and google/api/{annotations,http}.proto come from the npm package
# google-proto-files at a pinned version, unpacked into a temporary folder
# (third-party files are never committed).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

protoc_version_wanted="libprotoc 3.21.12"
google_proto_files_version="6.0.1"

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

(cd "$work" && npm pack --silent "google-proto-files@${google_proto_files_version}" >/dev/null &&
  tar xzf "google-proto-files-${google_proto_files_version}.tgz")
mkdir -p "$work/include/google/api"
cp "$work/package/google/api/annotations.proto" "$work/package/google/api/http.proto" "$work/include/google/api/"

go build -o "$work/bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$work/bin/protoc-gen-connect-go" connectrpc.com/connect/cmd/protoc-gen-connect-go

rm -rf rpc/gen
mkdir -p rpc/gen
mapfile -t protos < <(cd rpc/proto && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
(cd rpc/proto && PATH="$work/bin:$PATH" protoc \
  -I . -I "$work/include" -I /usr/include \
  --go_out="$root/rpc/gen" --go_opt=paths=source_relative \
  --connect-go_out="$root/rpc/gen" --connect-go_opt=paths=source_relative \
  "${protos[@]}")
echo "generated $(find rpc/gen -name '*.go' | wc -l) files in rpc/gen"

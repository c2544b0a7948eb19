#!/usr/bin/env bash
# Certificates for deploy/compose.yaml, with openssl.
#
#   deploy/certs.sh [DIR]            a CA and controllers 1, 2, 3 on hosts
#                                    controller-1..3
#   deploy/certs.sh --add ID HOST [DIR]
#                                    one more, signed by DIR's CA: controller
#                                    ID on HOST (a controller that replaces a
#                                    lost one gets a new id on the same host)
#
# DIR defaults to deploy/certs, which .gitignore keeps out of the tree. A
# controller's certificate is controller-<id>.pem (key controller-<id>-key.pem):
# common name controller-<id> (its peers let it send Raft messages only as
# that controller), its host name, localhost and 127.0.0.1, for server and
# client use (the controllers talk mutual TLS). The keys are made readable
# by everyone so that the image's user (65532) reads them through the bind
# mount: fine for a cluster on one machine; elsewhere give them to that user
# alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

issue() { # id host
  local name=controller-$1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name-key.pem" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 365 -out "$name.pem" \
    -extfile <(printf "subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth" "$2") 2>/dev/null
  rm "$name.csr"
  chmod 0644 "$name.pem" "$name-key.pem"
}

if [[ ${1:-} == --add ]]; then
  if [[ $# -lt 3 || ! $2 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 --add ID HOST [DIR]" >&2
    exit 2
  fi
  dir=${4:-$here/certs}
  cd "$dir"
  [[ -f ca.pem && -f ca-key.pem ]] || { echo "$dir holds no CA: run $0 first" >&2; exit 1; }
  issue "$2" "$3"
  echo "certificate of controller $2 on host $3 in $dir: controller-$2.pem with its key"
  exit 0
fi

dir=${1:-$here/certs}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -keyout ca-key.pem -out ca.pem -subj "/CN=dmq-compose-ca" 2>/dev/null
chmod 0644 ca.pem
for id in 1 2 3; do
  issue "$id" "controller-$id"
done
chmod 0755 "$dir"
echo "certificates in $dir: ca.pem and controller-{1,2,3}.pem with their keys"

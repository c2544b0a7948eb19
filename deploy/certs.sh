#!/usr/bin/env bash
# A CA and the three controllers' certificates for deploy/compose.yaml, with
# openssl: each controller's host name, localhost and 127.0.0.1, for server
# and client use (the controllers talk mutual TLS). Usage: deploy/certs.sh
# [DIR] (default deploy/certs, which .gitignore keeps out of the tree).
# The keys are made readable by everyone so that the image's user (65532)
# reads them through the bind mount: fine for a cluster on one machine;
# elsewhere give them to that user alone.
set -euo pipefail
dir=${1:-$(cd "$(dirname "$0")" && pwd)/certs}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -keyout ca-key.pem -out ca.pem -subj "/CN=dmq-compose-ca" 2>/dev/null
for id in 1 2 3; do
  name=controller-$id
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name-key.pem" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 365 -out "$name.pem" \
    -extfile <(printf "subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth" "$name") 2>/dev/null
  rm "$name.csr"
done
chmod 0755 "$dir"
chmod 0644 ./*.pem
echo "certificates in $dir: ca.pem and controller-{1,2,3}.pem with their keys"

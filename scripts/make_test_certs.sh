#!/usr/bin/env bash
# Makes the test certificates in tests/fixtures/tls/ (committed; run again
# only to replace them): a CA, and a leaf for localhost, 127.0.0.1 and ::1
# signed by it (CA:FALSE, with subjectAltName: clients such as Deno's reject
# a self-signed CA:TRUE leaf), both on P-256 keys, valid for 100 years.
# Needs Debian's openssl.
set -euo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/tls"
mkdir -p "$dir"
cd "$dir"
days=36500
openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=pico-socket-server test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
openssl ecparam -name prime256v1 -genkey -noout -out server.key.ec
openssl pkcs8 -topk8 -nocrypt -in server.key.ec -out server.key
rm server.key.ec
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
cat > server.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" -sha256 \
  -extfile server.ext -out server.pem
# The chain a server presents: its leaf, then the CA.
cat server.pem ca.pem > chain.pem
rm -f server.csr server.ext ca.srl
openssl verify -CAfile ca.pem server.pem

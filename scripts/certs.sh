#!/usr/bin/env bash
# Make a local CA and a server certificate signed by it, for the nginx HTTPS gateway.
#   scripts/certs.sh [--force] [--host NAME]... DIR
# DIR gets ca.crt + ca.key (the CA: clients trust ca.crt) and server.crt + server.key (for nginx),
# valid for localhost, 127.0.0.1 and ::1 plus each --host (a DNS name or an IP address).
# An existing CA is kept (clients that trust it go on working) and only the server certificate is
# issued again; --force makes a new CA too. Keys are written mode 0600.
set -euo pipefail

usage() { sed -n '3p' "$0" | sed 's/^# *//' >&2; exit 2; }

force=0
hosts=(localhost 127.0.0.1 ::1)
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --host) [ $# -ge 2 ] || usage; hosts+=("$2"); shift ;;
    -h | --help) usage ;;
    -*) echo "error: unknown option '$1'" >&2; usage ;;
    *) [ -z "$dir" ] || usage; dir=$1 ;;
  esac
  shift
done
[ -n "$dir" ] || usage
command -v openssl >/dev/null || { echo "error: openssl not found: apt-get install -y openssl" >&2; exit 3; }

san=""
for h in "${hosts[@]}"; do
  if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done
san=${san%,}

umask 077
mkdir -p "$dir"
work=$(mktemp -d "$dir/.certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ -e "$dir/ca.key" ] && [ "$force" -eq 0 ]; then
  [ -e "$dir/ca.crt" ] || { echo "error: $dir/ca.key exists without ca.crt: restore it or use --force" >&2; exit 1; }
  echo "keeping the CA in $dir (ca.crt); --force makes a new one"
else
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 3650 \
    -subj "/CN=confgen local CA" -keyout "$work/ca.key" -out "$work/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
  mv -f "$work/ca.key" "$dir/ca.key"
  chmod 644 "$work/ca.crt"
  mv -f "$work/ca.crt" "$dir/ca.crt"
  echo "made a new CA: $dir/ca.crt (give it to clients), key $dir/ca.key (keep it private)"
fi

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
  -subj "/CN=${hosts[0]}" -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
cat >"$work/ext.cnf" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
openssl x509 -req -in "$work/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -CAserial "$work/ca.srl" -days 825 -sha256 -extfile "$work/ext.cnf" -out "$work/server.crt" 2>/dev/null
openssl verify -CAfile "$dir/ca.crt" "$work/server.crt" >/dev/null
chmod 644 "$work/server.crt"
mv -f "$work/server.key" "$dir/server.key"
mv -f "$work/server.crt" "$dir/server.crt"
echo "made the server certificate $dir/server.crt (key $dir/server.key) for ${hosts[*]}"

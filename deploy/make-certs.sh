#!/bin/sh
# Makes the broker's TLS certificates with openssl: a private CA and a server certificate for
# the names (DNS names or IP addresses) that devices use to reach the broker.
# Usage: deploy/make-certs.sh [-d DIR] [-c CA_DIR] NAME...
#   DIR (default deploy/mosquitto/certs): server.crt, server.key (0600) and ca.crt, mounted
#       into the broker;
#   CA_DIR (default deploy/ca): ca.key (0600) and ca.crt, kept on this host only. An existing CA
#       is reused, so devices that trust its ca.crt keep working when the server certificate is
#       renewed (run the script again before server.crt expires: SERVER_DAYS).
# Devices verify the broker with ca.crt; give it to CPython agents as broker.ca_file.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$here/mosquitto/certs
ca_dir=$here/ca
CA_DAYS=${CA_DAYS:-3650}
SERVER_DAYS=${SERVER_DAYS:-825}
while getopts d:c: opt; do
    case $opt in
        d) dir=$OPTARG ;;
        c) ca_dir=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
    echo "usage: $0 [-d DIR] [-c CA_DIR] NAME... (the broker's DNS names or IP addresses)" >&2
    exit 2
fi

san=""
for name in "$@"; do
    case $name in
        '' | *[!A-Za-z0-9.:-]*)
            echo "make-certs.sh: '$name' is not a host name or address" >&2
            exit 2
            ;;
        *:*) kind=IP ;;
        *[!0-9.]*) kind=DNS ;;
        *) kind=IP ;;
    esac
    san="$san${san:+,}$kind:$name"
done

umask 077
mkdir -p "$dir" "$ca_dir"
if [ ! -f "$ca_dir/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -days "$CA_DAYS" -subj "/CN=TinyMetaFed broker CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$ca_dir/ca.key" -out "$ca_dir/ca.crt" 2>/dev/null
    echo "made a new CA in $ca_dir (keep ca.key off the broker)"
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$1" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
{
    echo "subjectAltName=$san"
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=serverAuth"
} > "$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" \
    -CAcreateserial -days "$SERVER_DAYS" -sha256 -extfile "$dir/server.ext" \
    -out "$dir/server.crt" 2>/dev/null
rm -f "$dir/server.csr" "$dir/server.ext" "$ca_dir/ca.srl"
cp "$ca_dir/ca.crt" "$dir/ca.crt"
chmod 0644 "$dir/server.crt" "$dir/ca.crt" "$ca_dir/ca.crt"
echo "made $dir/server.crt for $san (valid $SERVER_DAYS days); devices trust $dir/ca.crt"

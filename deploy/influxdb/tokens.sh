#!/bin/sh
# Runs once, as root, when the InfluxDB 2 volume is set up (docker-entrypoint-initdb.d): makes
# the two narrow tokens the stack uses instead of the admin token, and writes each into the
# shared token volume, readable only by the container user that needs it:
#   service.token  write-only on the bucket, for the service (uid 10001, see Dockerfile);
#   grafana.token  read-only on the bucket, for Grafana (uid 472).
# Run it again to rotate both (older tokens of the same description are deleted afterwards):
#   docker compose -f deploy/docker-compose.yml exec influxdb \
#       sh /docker-entrypoint-initdb.d/tokens.sh
# then restart service and grafana.
set -eu
dir=${TINYMETAFED_TOKEN_DIR:-/influx-tokens}
org=$DOCKER_INFLUXDB_INIT_ORG
user=$DOCKER_INFLUXDB_INIT_USERNAME
bucket=$DOCKER_INFLUXDB_INIT_BUCKET
bucket_id=$(influx bucket list --org "$org" --name "$bucket" --hide-headers | cut -f1)
if [ -z "$bucket_id" ]; then
    echo "tokens.sh: no bucket $bucket" >&2
    exit 1
fi

# field FIELD < JSON: the value of a string field of `influx ... --json` output
field() {
    sed -n 's/^[[:space:]]*"'"$1"'":[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1
}

# make_token DESCRIPTION PERMISSION_FLAG FILE UID
make_token() {
    created=$(influx auth create --org "$org" --user "$user" --description "$1" \
        "$2" "$bucket_id" --json)
    id=$(echo "$created" | field id)
    token=$(echo "$created" | field token)
    if [ -z "$id" ] || [ -z "$token" ]; then
        echo "tokens.sh: could not create '$1'" >&2
        exit 1
    fi
    umask 077
    printf '%s' "$token" > "$dir/.$3.new"
    chown "$4" "$dir/.$3.new"
    chmod 0400 "$dir/.$3.new"
    mv "$dir/.$3.new" "$dir/$3"
    influx auth list --org "$org" --user "$user" --hide-headers \
        | awk -F '\t' -v d="$1" -v keep="$id" '$2 == d && $1 != keep { print $1 }' \
        | while read -r old; do influx auth delete --id "$old" > /dev/null; done
    echo "tokens.sh: $3 holds '$1'"
}

mkdir -p "$dir"
chmod 0755 "$dir"
make_token "tinymetafed service: write the metrics bucket" --write-bucket service.token 10001
make_token "grafana: read the metrics bucket" --read-bucket grafana.token 472

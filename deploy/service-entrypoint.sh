#!/bin/sh
# The service image's entry point: reads the service's secrets from files when they are given
# as TINYMETAFED_PASSWORD_FILE or TINYMETAFED_INFLUX_TOKEN_FILE (docker secrets, the token that
# InfluxDB's init script wrote), so they need not sit in the container's definition; then runs
# `tinymetafed` with the container's arguments.
set -eu
for name in TINYMETAFED_PASSWORD TINYMETAFED_INFLUX_TOKEN; do
    eval "file=\${${name}_FILE-}"
    if [ -n "$file" ]; then
        if [ ! -r "$file" ] || [ ! -s "$file" ]; then
            echo "error: ${name}_FILE=$file is missing, unreadable or empty" >&2
            exit 2
        fi
        value=$(cat "$file")
        export "$name=$value"
        unset "${name}_FILE"
    fi
done
exec tinymetafed "$@"

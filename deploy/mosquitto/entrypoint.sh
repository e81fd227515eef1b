#!/bin/sh
# Starts the stack's broker. Before mosquitto runs, this script
#  - refuses to start while the service password is unset or a placeholder (check-secrets.sh);
#  - builds the broker's password file and ACL in a private run folder: the enrolled devices'
#    entries (passwd and acl beside mosquitto.conf, written by `tinymetafed device enroll`) and
#    two accounts made from the environment at every start: the service (read/write on the
#    fleets of TINYMETAFED_FLEETS) and the health check's monitor (read-only $SYS, with a new
#    random password each time); with TINYMETAFED_STANDBY_PASSWORD set, a third for a
#    standby service's watch (read-only, its fleets' service status topics);
#  - writes the monitor's mosquitto_sub options file, so the health check names no password;
#  - copies the TLS certificate and key where the broker's own user can read them.
# Paths default to the container's; the tests point them at a scratch folder.
set -eu

conf=${MOSQUITTO_CONFIG_DIR:-/mosquitto/config}
run=${MOSQUITTO_RUN_DIR:-/mosquitto/run}
data=${MOSQUITTO_DATA_DIR:-/mosquitto/data}
prefix=${TINYMETAFED_PREFIX:-tinymetafed}
fleets=${TINYMETAFED_FLEETS:-default}
service=tinymetafed-service
monitor=tinymetafed-monitor
standby=tinymetafed-standby

fail() {
    echo "refusing to start the broker: $*" >&2
    exit 1
}

sh "$conf/../check-secrets.sh" TINYMETAFED_SERVICE_PASSWORD || exit 1
standby_password=${TINYMETAFED_STANDBY_PASSWORD-}
if [ -n "$standby_password" ]; then
    sh "$conf/../check-secrets.sh" TINYMETAFED_STANDBY_PASSWORD || exit 1
fi

case $prefix in
    *[!A-Za-z0-9_./-]* | /* | */ | *//*) fail "TINYMETAFED_PREFIX '$prefix' is no topic prefix" ;;
esac
[ -n "$(echo "$fleets" | tr -d ' ')" ] || fail "TINYMETAFED_FLEETS is empty"
for fleet in $fleets; do
    case $fleet in
        *[!A-Za-z0-9_.-]*) fail "fleet '$fleet' has a character outside [A-Za-z0-9_.-]" ;;
    esac
done
for name in $service $monitor $standby; do
    if grep -q "^$name:" "$conf/passwd" 2> /dev/null \
        || grep -q "^user $name\$" "$conf/acl" 2> /dev/null; then
        fail "$conf/passwd or acl has an entry for the reserved account $name;" \
            "remove it (the account is made from the environment)"
    fi
done
if grep -Eq '^[[:space:]]*pattern[[:space:]]' "$conf/acl" 2> /dev/null; then
    fail "$conf/acl has pattern lines: they would apply to every account, whatever its fleet"
fi
for file in server.crt server.key; do
    if [ ! -f "$conf/certs/$file" ]; then
        fail "no $conf/certs/$file: run deploy/make-certs.sh with the broker's host names"
    fi
done

umask 077
mkdir -p "$run/certs" "$run/monitor"
monitor_password=$(tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 32)

# printf is a shell builtin: the passwords never appear on a command line
{
    printf '%s:%s\n' "$service" "$TINYMETAFED_SERVICE_PASSWORD"
    printf '%s:%s\n' "$monitor" "$monitor_password"
    if [ -n "$standby_password" ]; then
        printf '%s:%s\n' "$standby" "$standby_password"
    fi
} > "$run/passwd"
mosquitto_passwd -U "$run/passwd"
if [ -f "$conf/passwd" ]; then
    cat "$conf/passwd" >> "$run/passwd"
fi

# the enrolled devices first: a stray topic line above their first `user` line would then apply
# to anonymous clients (refused), never to the reserved accounts
{
    if [ -f "$conf/acl" ]; then
        cat "$conf/acl"
    fi
    echo
    echo "# added by entrypoint.sh at every start"
    echo "user $service"
    for fleet in $fleets; do
        echo "topic readwrite $prefix/$fleet/#"
    done
    echo "user $monitor"
    # shellcheck disable=SC2016 # the literal topic $SYS/#
    echo 'topic read $SYS/#'
    if [ -n "$standby_password" ]; then
        echo "user $standby"
        for fleet in $fleets; do
            echo "topic read $prefix/$fleet/service/status"
        done
    fi
} > "$run/acl"

printf -- '-u %s\n-P %s\n' "$monitor" "$monitor_password" > "$run/monitor/mosquitto_sub"
cp "$conf/certs/server.crt" "$conf/certs/server.key" "$run/certs/"

if [ "$(id -u)" = 0 ] && id mosquitto > /dev/null 2>&1; then
    chown -R mosquitto:mosquitto "$run"
    if [ -d "$data" ]; then
        chown -R mosquitto:mosquitto "$data"
    fi
fi
unset TINYMETAFED_SERVICE_PASSWORD TINYMETAFED_STANDBY_PASSWORD monitor_password standby_password
exec mosquitto -c "$conf/mosquitto.conf"

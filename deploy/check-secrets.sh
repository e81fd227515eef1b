#!/bin/sh
# Refuses to start the stack while a secret is unset, still a `change-me` placeholder of
# .env.example, shorter than 16 characters, or spread over several lines.
# Usage: check-secrets.sh NAME...   (names of environment variables); exit 1 naming every bad one.
# docker-compose.yml runs it before every other container, and the broker's entrypoint again.
set -u
min_length=16
bad=0
for name in "$@"; do
    case $name in
        '' | *[!A-Za-z0-9_]* | [0-9]*)
            echo "check-secrets.sh: '$name' is not a variable name" >&2
            exit 2
            ;;
    esac
    value=""
    eval "value=\${$name-}"
    problem=""
    case $value in
        '') problem="is not set" ;;
        [Cc][Hh][Aa][Nn][Gg][Ee]*[Mm][Ee]*)
            problem="is still the placeholder '$value' of .env.example"
            ;;
        *"
"*) problem="spans several lines" ;;
    esac
    if [ -z "$problem" ] && [ "${#value}" -lt "$min_length" ]; then
        problem="is shorter than $min_length characters"
    fi
    if [ -n "$problem" ]; then
        echo "refusing to start: $name $problem;" \
            "set it in deploy/.env (e.g. openssl rand -hex 24)" >&2
        bad=1
    fi
done
exit "$bad"

#!/bin/sh
# Runs once when the InfluxDB 2 volume is created: map the bucket to an InfluxQL database of the
# same name, so Grafana's InfluxQL datasource can query it.
set -e
bucket_id=$(influx bucket list --name "$DOCKER_INFLUXDB_INIT_BUCKET" --hide-headers | cut -f1)
influx v1 dbrp create --db "$DOCKER_INFLUXDB_INIT_BUCKET" --rp autogen \
    --bucket-id "$bucket_id" --default

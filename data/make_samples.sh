#!/bin/sh
# Regenerates the committed samples in data/ (see data/README.md).
# Usage: data/make_samples.sh [SHARED_DATA_DIR]   (default: ../shared/data beside the repo)
# Uses `matcher` from PATH, or $MATCHER (e.g. MATCHER=.venv/bin/matcher).
set -eu
cd "$(dirname "$0")/.."
SHARED="${1:-../shared/data}"
MATCHER="${MATCHER:-matcher}"

# One local day of real Uber pickups: 2014-04-04, the densest full day of the April file
# (all of base B02512 plus the gap-free B02598 stretch of April 1-6).
"$MATCHER" import nyc-uber-2014 "$SHARED/nyc-uber-2014/uber-raw-data-apr14.csv.gz" \
    --day 2014-04-04 --out data/nyc-uber-2014-04-04.parquet

# A small synthetic city: 1,500 drivers, 2 requests/s for 1 hour, seed 0.
"$MATCHER" synth --out data/synth-small.parquet --drivers-out data/synth-small-drivers.parquet \
    --drivers 1500 --requests-per-s 2 --hours 1 --seed 0

"$MATCHER" validate data/nyc-uber-2014-04-04.parquet
"$MATCHER" validate data/synth-small.parquet --drivers data/synth-small-drivers.parquet

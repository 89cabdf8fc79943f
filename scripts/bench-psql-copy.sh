#!/usr/bin/env bash
# psql's \copy of one CSV file through shardgate's Postgres listener, against the same rows
# \copy-ed straight into the shards, one psql per shard in parallel; rounds alternate.
#
# Needs a running `shardgate dev` (its banner's postgres and shard lines are read from the
# dev directory's config) and psql. Prints one line per run: target, rows, seconds, rows/s,
# and for shardgate the proxy's CPU per row.
#
#   scripts/bench-psql-copy.sh [ROWS] [ROUNDS] [DEV_DIR]
set -euo pipefail

rows=${1:-2000000}
rounds=${2:-3}
dev_dir=${3:-.shardgate/dev}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

config="$dev_dir/shardgate.toml"
password=$(cat "$dev_dir/app-password")
listen=$(sed -n '/^\[postgres\]/,/^\[/s/^listen = "\(.*\)"/\1/p' "$config")
gate="postgres://app:$password@$listen/shardgate"
mapfile -t shards < <(sed -n 's/^url = "\(postgres:[^"]*\)"/\1/p' "$config")
proxy=$(pgrep -f "shardgate[^ ]* dev" | head -1)

# The same rows twice: for shardgate, and with a placeholder _sg_hash for the shards (plain
# COPY into events_no_id costs a shard the same whatever the value).
python3 - "$rows" "$work" "${#shards[@]}" <<'EOF'
import sys
rows, work, shards = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
pad = "x" * 100
parts = [open(f"{work}/direct{i}.csv", "w") for i in range(shards)]
with open(f"{work}/rows.csv", "w") as gate:
    for i in range(rows):
        row = f'tenant-{i % 1000},type-{i % 20},2026-05-01 12:00:00+00,"{{""i"": {i}, ""pad"": ""{pad}""}}"'
        gate.write(row + "\n")
        parts[i % shards].write(row + ",0\n")
for part in parts:
    part.close()
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
now() { date +%s.%N; }
truncate_all() {
    for url in "${shards[@]}"; do psql -X -q "$url" -c "TRUNCATE events_no_id" ; done
}

for round in $(seq "$rounds"); do
    truncate_all
    start=$(now)
    pids=()
    for i in "${!shards[@]}"; do
        psql -X -q "${shards[$i]}" -c "\\copy events_no_id (tenant_id, event_type, ts, payload, _sg_hash) from '$work/direct$i.csv' csv" &
        pids+=($!)
    done
    wait "${pids[@]}"
    took=$(echo "$(now) - $start" | bc)
    printf 'round %s direct    %s rows %.2f s %.0f rows/s\n' "$round" "$rows" "$took" "$(echo "$rows / $took" | bc -l)"

    truncate_all
    ticks=$(cpu_ticks "$proxy")
    start=$(now)
    psql -X -q "$gate" -c "\\copy events_no_id (tenant_id, event_type, ts, payload) from '$work/rows.csv' csv"
    took=$(echo "$(now) - $start" | bc)
    used=$(( $(cpu_ticks "$proxy") - ticks ))
    micros=$(echo "$used * 1000000 / $(getconf CLK_TCK) / $rows" | bc -l)
    printf 'round %s shardgate %s rows %.2f s %.0f rows/s, proxy %.2f us/row\n' "$round" "$rows" "$took" "$(echo "$rows / $took" | bc -l)" "$micros"
done

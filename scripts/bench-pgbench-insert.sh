#!/usr/bin/env bash
# pgbench -M prepared, one-row autocommit INSERTs of events_no_id: CLIENTS clients through
# shardgate's Postgres listener, against the same clients straight on the shards (half on
# each, at once). Rounds alternate. Needs a running `shardgate dev` and pgbench.
#
#   scripts/bench-pgbench-insert.sh [CLIENTS] [SECONDS] [ROUNDS] [DEV_DIR]
set -euo pipefail

clients=${1:-64}
seconds=${2:-20}
rounds=${3:-2}
dev_dir=${4:-.shardgate/dev}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

config="$dev_dir/shardgate.toml"
export PGPASSWORD
PGPASSWORD=$(cat "$dev_dir/app-password")
listen=$(sed -n '/^\[postgres\]/,/^\[/s/^listen = "\(.*\)"/\1/p' "$config")
mapfile -t shards < <(sed -n 's/^url = "\(postgres:[^"]*\)"/\1/p' "$config")
proxy=$(pgrep -f "shardgate[^ ]* dev" | head -1)

cat > "$work/gate.sql" <<'SQL'
\set tenant random(1, 1000)
\set etype random(1, 20)
INSERT INTO events_no_id (tenant_id, event_type, payload) VALUES (:tenant, :etype, '{"p": 1}');
SQL
# Straight to a shard the row also needs the hidden _sg_hash shardgate stores with it.
cat > "$work/direct.sql" <<'SQL'
\set tenant random(1, 1000)
\set etype random(1, 20)
INSERT INTO events_no_id (tenant_id, event_type, payload, _sg_hash) VALUES (:tenant, :etype, '{"p": 1}', 0);
SQL

tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$1" | head -1; }
per_shard=$(( clients / ${#shards[@]} ))
for round in $(seq "$rounds"); do
    for i in "${!shards[@]}"; do
        pgbench -n -M prepared -f "$work/direct.sql" -c "$per_shard" -j 2 -T "$seconds" "${shards[$i]}" > "$work/direct$i.out" 2>&1 &
    done
    wait
    total=0
    for i in "${!shards[@]}"; do total=$(echo "$total + $(tps "$work/direct$i.out")" | bc); done
    printf 'round %s direct    %s clients %.0f rows/s\n' "$round" "$clients" "$total"

    ticks=$(awk '{print $14 + $15}' "/proc/$proxy/stat")
    host=${listen%:*}
    port=${listen##*:}
    pgbench -n -M prepared -f "$work/gate.sql" -c "$clients" -j 2 -T "$seconds" -h "$host" -p "$port" -U app shardgate > "$work/gate.out" 2>&1
    rate=$(tps "$work/gate.out")
    used=$(( $(awk '{print $14 + $15}' "/proc/$proxy/stat") - ticks ))
    micros=$(echo "$used * 1000000 / $(getconf CLK_TCK) / ($rate * $seconds)" | bc -l)
    printf 'round %s shardgate %s clients %.0f rows/s, proxy %.1f us/row\n' "$round" "$clients" "$rate" "$micros"
done

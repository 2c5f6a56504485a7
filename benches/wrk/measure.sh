#!/bin/bash
# one wrk run against port $2 (proxy pid file $1), prints req/s and CPU us per request (user, sys)
pid=$(cat $1); port=$2; path=${3:-/health}
read u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
out=$(wrk -t1 -c32 -d6s ${SCRIPT:+-s $SCRIPT} http://127.0.0.1:$port$path 2>&1)
read u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
reqs=$(echo "$out" | awk '/requests in/{print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
errs=$(echo "$out" | grep -E "Non-2xx|errors" | tr '\n' ' ')
tck=$(getconf CLK_TCK)
awk -v r=$reqs -v u=$((u1-u0)) -v s=$((s1-s0)) -v t=$tck -v rps=$rps -v e="$errs" 'BEGIN{printf "rps=%s cpu_us_per_req=%.1f (user %.1f + sys %.1f) %s\n", rps, (u+s)/t*1e6/r, u/t*1e6/r, s/t*1e6/r, e}'

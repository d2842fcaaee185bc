# Shared by bench/ttl_memory.sh and bench/memory_budget.sh (sourced, not run): replays the churning
# `lattice gen --churn` recording into a new state directory and prints its `--progress` lines as
# a table. The caller sets lattice, tmp, shards and every.
#
#   churn_run LABEL EXTRA_COLUMNS [REPLAY_ARGS...]
#
# EXTRA_COLUMNS: space-separated NAME=EXPR after the fixed columns (shards, live_data_MB, rss_MB,
# nodes); EXPR is an awk expression over the progress line's fields, e.g. 'evicted=$11'
# 'change_log_MB=$15/1e6' (a NAME ending in _MB is printed with one decimal, others as integers). Leaves $tmp/LABEL (the state), $tmp/LABEL.err and $tmp/LABEL.time.

churn_gen() {
  echo gen --churn --shards "$shards" --blades 64 --churn-every 20000 --intent-window 2000 --seed 11
}

churn_run() {
  local label=$1 extra=$2
  shift 2
  local gen
  read -r -a gen <<<"$(churn_gen)"
  echo "== $label: lattice ${gen[*]} | lattice replay - --allowed-lateness 1m $*"
  local names="shards live_data_MB rss_MB nodes" prog='$3, $5/1e6, $7/1e6, $9' fmt='%12s %14s %12s %12s'
  local afmt='%12d %14.1f %12.1f %12d' col
  for col in $extra; do
    names+=" ${col%%=*}"
    prog+=", ${col#*=}"
    fmt+=' %14s'
    case "${col%%=*}" in *_MB) afmt+=' %14.1f' ;; *) afmt+=' %14d' ;; esac
  done
  # shellcheck disable=SC2086,SC2059
  printf "$fmt\n" $names
  "$lattice" "${gen[@]}" |
    /usr/bin/time -f "time: user %U s, system %S s, max RSS %M KB" \
      "$lattice" replay - --state "$tmp/$label" --allowed-lateness 1m --progress "$every" "$@" \
      2>"$tmp/$label.err" >"$tmp/$label.out"
  awk "/^progress:/ {printf \"$afmt\\n\", $prog}" "$tmp/$label.err"
  grep '^time:' "$tmp/$label.err" | tee "$tmp/$label.time" || true
  du -sh "$tmp/$label" | awk '{print "state directory at the end: " $1}'
}

#!/usr/bin/env bash
# The allocator chosen with LATTICE_ALLOCATOR (docs/architecture.md "The allocator") really replaces
# glibc's malloc for the whole process: the dynamic linker's bindings (LD_DEBUG=bindings, every
# symbol bound at start with LD_BIND_NOW) must send malloc and free of the executable (and the
# statically linked RocksDB in it), of libstdc++ (operator new) and of librdkafka (its per-message
# allocations) to the allocator's library. With LATTICE_ALLOCATOR=system, to glibc's libc.so.6.
#
#   bash allocator_test.sh LATTICE_BINARY LIBRARY_NAME     (mimalloc, jemalloc, tcmalloc_minimal, c)
#
# Every check prints "ok" or "FAIL" with what was expected; the script exits 1 if any failed.
set -uo pipefail

lattice=${1:?usage: allocator_test.sh LATTICE_BINARY LIBRARY_NAME}
name=${2:?usage: allocator_test.sh LATTICE_BINARY LIBRARY_NAME}
[ -x "$lattice" ] || { echo "FAIL - $lattice is not an executable"; exit 1; }
bindings=$(LD_BIND_NOW=1 LD_DEBUG=bindings "$lattice" --help 2>&1 >/dev/null)

failures=0
# check LABEL FILE_PATTERN SYMBOL: the last binding of SYMBOL from a file matching FILE_PATTERN.
check() {
  local to
  to=$(grep -E "binding file [^ ]*$2 .*normal symbol \`$3'" <<<"$bindings" | tail -n 1 |
    sed -E 's/.* to ([^ ]*) .*/\1/')
  if [[ "$(basename "$to")" == lib"$name".so* ]]; then
    echo "ok   - $1: $3 -> $to"
  else
    echo "FAIL - $1: $3 bound to '${to:-nothing}', expected lib$name.so"
    failures=$((failures + 1))
  fi
}
exe="/$(basename "$lattice")"
check lattice "$exe" malloc
check lattice "$exe" free
check librdkafka '/librdkafka[.]so[.0-9]*' malloc
check librdkafka '/librdkafka[.]so[.0-9]*' free
check libstdc++ '/libstdc[+][+][.]so[.0-9]*' malloc
check libstdc++ '/libstdc[+][+][.]so[.0-9]*' free

# jemalloc's compiled-in settings (cli/src/jemalloc_conf.cc) must reach it: the executable's
# malloc_conf takes the place of the library's, and MALLOC_CONF still adds to them.
if [ "$name" = jemalloc ]; then
  opts=$(MALLOC_CONF=stats_print:true "$lattice" --help 2>&1 >/dev/null)
  for want in "opt.tcache_nslots_small_max: 2048" "opt.lg_tcache_nslots_mul: 4" "opt.stats_print: true"; do
    if grep -qF "$want" <<<"$opts"; then
      echo "ok   - jemalloc setting: $want"
    else
      echo "FAIL - jemalloc setting: expected '$want' in its statistics at exit"
      failures=$((failures + 1))
    fi
  done
  # slab_sizes is not among the printed options: the 320-byte bin's slab geometry shows it (the
  # bins table's columns 14 and 15, regs and pgs; 64 and 5 by default).
  geometry=$(awk '$1 == "320" && $2 ~ /^[0-9]+$/ { print $14 " " $15; exit }' <<<"$opts")
  if [ "$geometry" = "512 40" ]; then
    echo "ok   - jemalloc setting: slabs of 512 objects / 40 pages for the 320-byte class"
  else
    echo "FAIL - jemalloc setting: the 320-byte class's slabs have '${geometry:-no row}' (regs pgs), expected '512 40'"
    failures=$((failures + 1))
  fi
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"

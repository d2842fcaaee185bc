// jemalloc's compiled-in settings for the lattice executable (built only with
// LATTICE_ALLOCATOR=jemalloc; docs/architecture.md "The allocator").
//
// jemalloc reads `malloc_conf` once, at its first allocation, before the MALLOC_CONF environment
// variable (which overrides it option by option). Its default thread caches hold at most 200
// objects of a size class. Producing, librdkafka allocates four objects per message on the
// sending thread (message, header list, its array, header) and frees them there in bursts of a
// whole produce response (thousands at once), which overflow bins that small: they flush to the
// arena and refill from it all the time. Up to 2,048 cached objects per bin (or 16 slabs' worth,
// where that is fewer) cut `lattice emit`'s main thread by ~9% of its instructions and its CPU by
// ~5-10%; `lattice aggregate` and `lattice replay` neither gain nor lose, and a 2M-shard
// catch-up's peak RSS does not grow (docs/benchmarks.md "Session 10 allocator" and "Quiet-machine
// figures at the end of session 10"). jemalloc's incremental GC returns what a thread's cache
// stops using.
//
// Slabs of 40 pages (512 objects) instead of 5 (64) for the 320-byte size class: librdkafka 2.0.2's
// consumer allocates one 288-303-byte op per fetched message on its broker thread, and the
// aggregator frees them on its fetch and decode threads a chunk later. With 64 objects a slab
// fills and empties in microseconds: a 2M-shard catch-up made ~30,000 slabs of that class, and
// the pages of emptied ones were returned (jemalloc's decay) and faulted in again: ~50,000 of the
// broker thread's minor faults for ~10,000 distinct pages. With 512 it makes ~3,200: the broker
// thread's faults fall to ~19,000 (the whole process's from ~135,000 to ~105,000) and its CPU by
// ~0.08 s; peak RSS does not grow, and `lattice replay` (no Kafka) neither gains nor loses
// (docs/benchmarks.md "Session 11 allocator").
extern "C" {
// NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): jemalloc's interface
extern const char* malloc_conf;
const char* malloc_conf =
    "tcache_nslots_small_max:2048,lg_tcache_nslots_mul:4,slab_sizes:257-320:65536";
}

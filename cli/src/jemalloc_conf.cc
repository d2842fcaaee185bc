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
extern "C" {
// NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): jemalloc's interface
extern const char* malloc_conf;
const char* malloc_conf = "tcache_nslots_small_max:2048,lg_tcache_nslots_mul:4";
}

// jemalloc's compiled-in settings for the lattice executable (built only with
// LATTICE_ALLOCATOR=jemalloc; docs/architecture.md "The allocator").
//
// jemalloc reads `malloc_conf` once, at its first allocation, before the MALLOC_CONF environment
// variable (which overrides it option by option). Its default thread caches hold at most 200
// objects of a size class. Producing, librdkafka allocates four objects per message on the
// sending thread (message, header list, its array, header) and frees them there in bursts of a
// whole produce response (thousands at once); consuming, the fetch thread frees what its broker
// thread allocated in similar bursts. Bins that small flush to the arena and refill from it all
// the time. Up to 2,048 cached objects per bin (16 x the objects of one slab, where that is
// fewer) cut `lattice emit`'s CPU by ~10% and `lattice aggregate`'s by ~4%, with no higher peak
// RSS in a 2M-shard catch-up (docs/benchmarks.md "Session 10 allocator"). A thread's cache holds
// at most a few MB, and jemalloc's incremental GC returns what a thread stops using.
extern "C" {
// NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): jemalloc's interface
extern const char* malloc_conf;
const char* malloc_conf = "tcache_nslots_small_max:2048,lg_tcache_nslots_mul:4";
}

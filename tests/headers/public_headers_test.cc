// Includes every public header of every library and fails to compile if a third-party library
// leaks through them (STYLE.md: RocksDB only in crdt/src, simdjson only in the decoder's .cc,
// librdkafka only in ingest/src, Beast only in observer/src). A new public header belongs here.
#include "lattice/core/duration.h"
#include "lattice/core/json_text.h"
#include "lattice/core/line_reader.h"
#include "lattice/core/path.h"
#include "lattice/core/shard.h"
#include "lattice/core/status.h"
#include "lattice/core/timestamp.h"
#include "lattice/crdt/merge_engine.h"
#include "lattice/crdt/state_join.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/crdt/state_store.h"
#include "lattice/crdt/types.h"
#include "lattice/ingest/aggregator.h"
#include "lattice/ingest/aggregator_config.h"
#include "lattice/ingest/dev_broker.h"
#include "lattice/ingest/emitter.h"
#include "lattice/ingest/kafka_settings.h"
#include "lattice/ingest/line_emitter.h"
#include "lattice/ingest/message_identity.h"
#include "lattice/ingest/recorder.h"
#include "lattice/ingest/replayer.h"
#include "lattice/ingest/synthetic.h"
#include "lattice/processors/demo_cluster.h"
#include "lattice/ingest/time_travel.h"

#if defined(ROCKSDB_MAJOR) || defined(ROCKSDB_NAMESPACE)
#error "a public header includes RocksDB"
#endif
#if defined(SIMDJSON_VERSION) || defined(SIMDJSON_PADDING)
#error "a public header includes simdjson"
#endif
#if defined(RD_KAFKA_VERSION)
#error "a public header includes librdkafka"
#endif
#if defined(BOOST_BEAST_VERSION) || defined(BOOST_VERSION)
#error "a public header includes Boost"
#endif
#if defined(ABSL_NAMESPACE_BEGIN) || defined(XXH_VERSION_NUMBER) || defined(ZSTD_VERSION_MAJOR)
#error "a public header includes a private dependency (Abseil, xxHash, zstd)"
#endif

int main() { return 0; }

// DevBroker: a development Kafka cluster on 127.0.0.1 built on librdkafka's mock cluster
// (`lattice broker`, DESIGN.md §7), with a line-oriented control channel that injects faults
// through the mock API (brokers down/up, leader moves, request errors, round-trip delays).
//
// Known limits of the mock in Debian's librdkafka 2.0.2, to design around: each partition keeps
// only about 5 MiB or 100,000 message sets (older ones are dropped; use enough partitions for big
// runs); topics cannot be created through the Admin API (create them here, or with the `create`
// control command; the mock auto-creates unknown topics with 4 partitions when a client asks for
// their metadata); all brokers of a cluster share one thread; listen ports are chosen by the
// operating system (they cannot be pinned in 2.0.2); nothing is persisted.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/status.h"

namespace lattice::ingest {

/// A topic to create and its partition count.
struct TopicSpec {
  std::string name;
  int partitions = 1;
};

/// Parses "NAME:PARTITIONS" (PARTITIONS in 1..100000; "NAME" alone means one partition).
/// Errors: InvalidArgument naming the text.
Result<TopicSpec> ParseTopicSpec(std::string_view text);

/// The topics `lattice broker` creates by default: lattice.shards with 64 partitions,
/// lattice.dead, lattice.changes and lattice.jobs with one each.
std::vector<TopicSpec> DefaultDevTopics();

struct DevBrokerOptions {
  int brokers = 1;  // 1..32; broker ids are 1..brokers
  std::vector<TopicSpec> topics = DefaultDevTopics();
};

/// A running mock cluster. Destroying it stops the brokers (and the control listener).
///
/// Thread safety: Execute() may be called from any thread (the mock API hands each call to the
/// cluster's own thread and waits for it).
class DevBroker {
 public:
  /// Starts the cluster and creates `options.topics` (replication factor min(brokers, 3)).
  /// Errors: InvalidArgument for a bad broker count or topic; Internal when librdkafka cannot
  /// start the mock cluster.
  static Result<std::unique_ptr<DevBroker>> Start(const DevBrokerOptions& options);

  ~DevBroker();
  DevBroker(const DevBroker&) = delete;
  DevBroker& operator=(const DevBroker&) = delete;

  /// The bootstrap list "127.0.0.1:PORT,..." (one address per broker).
  const std::string& bootstraps() const;

  /// Runs one control command (see ControlHelp()) and returns its one-line answer: "ok",
  /// "ok <value>" or "error: <reason>". Never throws; bad commands get an "error:" answer.
  std::string Execute(std::string_view line);

  /// Serves the control protocol over TCP on 127.0.0.1:`port` (0 picks a free port) from a
  /// background thread: each line received is Execute()d and its answer written back followed
  /// by '\n'. Returns the port. Errors: Unavailable when the port cannot be bound.
  Result<int> ListenControl(int port);

  /// The control commands, one per line, for --help and the `help` command.
  static std::string_view ControlHelp();

 private:
  struct Impl;
  explicit DevBroker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::ingest

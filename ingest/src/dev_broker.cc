// DevBroker: librdkafka's mock cluster plus the control protocol (dev_broker.h).
#include "lattice/ingest/dev_broker.h"

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kafka_conf.h"
#include "lattice/ingest/kafka_settings.h"

namespace lattice::ingest {

namespace {

using internal::KafkaHandle;

constexpr int kMaxBrokers = 32;
constexpr int kMaxPartitions = 100000;

// Kafka protocol API keys by name (the mock's request-error injection takes the number).
struct ApiKeyName {
  const char* name;
  int16_t key;
};
constexpr ApiKeyName kApiKeys[] = {
    {"Produce", 0},
    {"Fetch", 1},
    {"ListOffsets", 2},
    {"Metadata", 3},
    {"OffsetCommit", 8},
    {"OffsetFetch", 9},
    {"FindCoordinator", 10},
    {"JoinGroup", 11},
    {"Heartbeat", 12},
    {"LeaveGroup", 13},
    {"SyncGroup", 14},
    {"DescribeGroups", 15},
    {"ListGroups", 16},
    {"SaslHandshake", 17},
    {"ApiVersions", 18},
    {"CreateTopics", 19},
    {"DeleteTopics", 20},
    {"DeleteRecords", 21},
    {"InitProducerId", 22},
    {"OffsetForLeaderEpoch", 23},
    {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25},
    {"EndTxn", 26},
    {"TxnOffsetCommit", 28},
    {"DescribeConfigs", 32},
    {"AlterConfigs", 33},
    {"SaslAuthenticate", 36},
    {"CreatePartitions", 37},
    {"DeleteGroups", 42},
    {"OffsetDelete", 47},
};

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

template <typename Int>
bool ParseInt(std::string_view s, Int& out) {
  if (s.empty()) {
    return false;
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

Result<int16_t> ParseApiKey(std::string_view s) {
  int16_t key = 0;
  if (ParseInt(s, key) && key >= 0) {
    return key;
  }
  for (const auto& k : kApiKeys) {
    if (EqualsIgnoreCase(s, k.name)) {
      return k.key;
    }
  }
  return Status::InvalidArgument("unknown API key '" + std::string(s) +
                                 "' (a number or a name such as Produce, Fetch, Metadata, "
                                 "OffsetCommit, FindCoordinator, JoinGroup, Heartbeat)");
}

Result<rd_kafka_resp_err_t> ParseErrorName(std::string_view s) {
  int code = 0;
  if (ParseInt(s, code)) {
    return static_cast<rd_kafka_resp_err_t>(code);
  }
  constexpr std::string_view kPrefix = "RD_KAFKA_RESP_ERR_";
  if (s.substr(0, kPrefix.size()) == kPrefix) {
    s.remove_prefix(kPrefix.size());
  }
  const struct rd_kafka_err_desc* descs = nullptr;
  size_t cnt = 0;
  rd_kafka_get_err_descs(&descs, &cnt);
  for (size_t i = 0; i < cnt; ++i) {
    if (descs[i].name != nullptr && EqualsIgnoreCase(s, descs[i].name)) {
      return descs[i].code;
    }
  }
  return Status::InvalidArgument("unknown Kafka error '" + std::string(s) +
                                 "' (a number or a name such as NOT_LEADER_FOR_PARTITION, "
                                 "REQUEST_TIMED_OUT, NOT_COORDINATOR, BROKER_NOT_AVAILABLE)");
}

std::vector<std::string_view> SplitWords(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) {
      ++i;
    }
    std::size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') {
      ++j;
    }
    if (j > i) {
      words.push_back(line.substr(i, j - i));
    }
    i = j;
  }
  return words;
}

std::string Answer(rd_kafka_resp_err_t err) {
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    return "ok";
  }
  return "error: " + internal::KafkaErrorText(err);
}

}  // namespace

Result<TopicSpec> ParseTopicSpec(std::string_view text) {
  TopicSpec spec;
  const auto colon = text.rfind(':');
  spec.name = std::string(text.substr(0, colon));
  if (colon != std::string_view::npos) {
    if (!ParseInt(text.substr(colon + 1), spec.partitions) || spec.partitions < 1 ||
        spec.partitions > kMaxPartitions) {
      return Status::InvalidArgument("topic '" + std::string(text) +
                                     "': the partition count after ':' must be 1.." +
                                     std::to_string(kMaxPartitions));
    }
  }
  if (spec.name.empty() || spec.name.size() > 249) {
    return Status::InvalidArgument("topic '" + std::string(text) +
                                   "': the name must have 1 to 249 characters");
  }
  for (char c : spec.name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return Status::InvalidArgument("topic '" + std::string(text) +
                                     "': names may only use [a-zA-Z0-9._-]");
    }
  }
  return spec;
}

std::vector<TopicSpec> DefaultDevTopics() {
  return {{std::string(kShardsTopic), 64},
          {std::string(kDeadTopic), 1},
          {std::string(kChangesTopic), 1},
          {std::string(kJobsTopic), 1}};
}

struct DevBroker::Impl {
  KafkaHandle rk;
  rd_kafka_mock_cluster_t* mcluster = nullptr;
  std::string bootstraps;
  int brokers = 1;

  // Control listener.
  int listen_fd = -1;
  int wake_pipe[2] = {-1, -1};
  std::thread control_thread;
  std::function<std::string(std::string_view)> execute;  // DevBroker::Execute

  ~Impl() {
    if (control_thread.joinable()) {
      const char c = 'x';
      (void)!write(wake_pipe[1], &c, 1);
      control_thread.join();
    }
    for (int fd : {listen_fd, wake_pipe[0], wake_pipe[1]}) {
      if (fd >= 0) {
        close(fd);
      }
    }
    if (mcluster != nullptr) {
      rd_kafka_mock_cluster_destroy(mcluster);
    }
  }

  std::string CreateTopic(std::string_view name, int partitions) {
    const int replication = brokers < 3 ? brokers : 3;
    return Answer(
        rd_kafka_mock_topic_create(mcluster, std::string(name).c_str(), partitions, replication));
  }

  void ServeControl();
};

DevBroker::DevBroker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DevBroker::~DevBroker() = default;

const std::string& DevBroker::bootstraps() const { return impl_->bootstraps; }

Result<std::unique_ptr<DevBroker>> DevBroker::Start(const DevBrokerOptions& options) {
  if (options.brokers < 1 || options.brokers > kMaxBrokers) {
    return Status::InvalidArgument("the broker count must be 1.." + std::to_string(kMaxBrokers));
  }
  auto impl = std::make_unique<Impl>();
  impl->brokers = options.brokers;
  // The mock cluster borrows a client handle for its logging and thread; this producer never
  // connects anywhere (no bootstrap servers), so keep its "no bootstrap.servers" warning quiet.
  internal::KafkaConf conf(rd_kafka_conf_new());
  LATTICE_RETURN_IF_ERROR(internal::SetKafkaProperty(conf.get(), "log_level", "3"));
  LATTICE_ASSIGN_OR_RETURN(impl->rk, internal::NewKafkaHandle(RD_KAFKA_PRODUCER, std::move(conf)));
  impl->mcluster = rd_kafka_mock_cluster_new(impl->rk.get(), options.brokers);
  if (impl->mcluster == nullptr) {
    return Status::Internal("librdkafka could not start the mock cluster");
  }
  impl->bootstraps = rd_kafka_mock_cluster_bootstraps(impl->mcluster);
  for (const auto& t : options.topics) {
    if (t.partitions < 1 || t.partitions > kMaxPartitions) {
      return Status::InvalidArgument("topic '" + t.name + "': bad partition count");
    }
    std::string answer = impl->CreateTopic(t.name, t.partitions);
    if (answer != "ok") {
      return Status::Internal("creating topic '" + t.name + "': " + answer);
    }
  }
  return std::unique_ptr<DevBroker>(new DevBroker(std::move(impl)));
}

std::string_view DevBroker::ControlHelp() {
  return "help                                   list the commands\n"
         "bootstrap                              answer 'ok <bootstrap list>'\n"
         "create <topic> <partitions>            create a topic\n"
         "down <broker-id>                       take a broker down (connections are closed and "
         "refused)\n"
         "up <broker-id>                         bring a broker back\n"
         "rtt <broker-id> <ms>                   delay every answer of a broker (0 = none)\n"
         "leader <topic> <partition> <broker-id> move a partition's leader (-1: no leader)\n"
         "errors <ApiKey> <count> <Error>        fail the next <count> requests of that API on "
         "any broker\n"
         "broker-errors <broker-id> <ApiKey> <count> <Error> [rtt-ms]\n"
         "                                       the same, on one broker, optionally delayed\n"
         "clear-errors <ApiKey>                  drop injected errors not yet used\n"
         "topic-error <topic> <Error>            make the topic's metadata report an error "
         "(NO_ERROR clears it)\n"
         "coordinator <group|transaction> <key> <broker-id>  move a group's coordinator\n"
         "ApiKey: a number or a name (Produce, Fetch, ListOffsets, Metadata, OffsetCommit, "
         "OffsetFetch, FindCoordinator, JoinGroup, Heartbeat, LeaveGroup, SyncGroup, "
         "InitProducerId, ...).\n"
         "Error: a number or a librdkafka error name without RD_KAFKA_RESP_ERR_ (e.g. "
         "NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT, NOT_COORDINATOR, "
         "LEADER_NOT_AVAILABLE).\n"
         "Every command answers one line: 'ok', 'ok <value>' or 'error: <reason>'.\n";
}

std::string DevBroker::Execute(std::string_view line) {
  const std::vector<std::string_view> w = SplitWords(line);
  if (w.empty()) {
    return "error: empty command (try 'help')";
  }
  const std::string_view cmd = w[0];
  auto usage = [&](std::string_view u) { return "error: usage: " + std::string(u); };
  auto broker_id = [&](std::string_view s, int32_t& id) {
    return ParseInt(s, id) && id >= 1 && id <= impl_->brokers;
  };
  rd_kafka_mock_cluster_t* mc = impl_->mcluster;
  int32_t id = 0;
  if (cmd == "help") {
    std::string h(ControlHelp());
    for (char& c : h) {
      if (c == '\n') {
        c = ';';
      }
    }
    return "ok " + h;
  }
  if (cmd == "bootstrap") {
    return "ok " + impl_->bootstraps;
  }
  if (cmd == "create") {
    int partitions = 0;
    if (w.size() != 3 || !ParseInt(w[2], partitions)) {
      return usage("create <topic> <partitions>");
    }
    auto spec = ParseTopicSpec(std::string(w[1]) + ":" + std::string(w[2]));
    if (!spec.ok()) {
      return "error: " + spec.status().message();
    }
    return impl_->CreateTopic(spec->name, spec->partitions);
  }
  if (cmd == "down" || cmd == "up") {
    if (w.size() != 2 || !broker_id(w[1], id)) {
      return usage(std::string(cmd) + " <broker-id 1.." + std::to_string(impl_->brokers) + ">");
    }
    return Answer(cmd == "down" ? rd_kafka_mock_broker_set_down(mc, id)
                                : rd_kafka_mock_broker_set_up(mc, id));
  }
  if (cmd == "rtt") {
    int ms = 0;
    if (w.size() != 3 || !broker_id(w[1], id) || !ParseInt(w[2], ms) || ms < 0) {
      return usage("rtt <broker-id> <ms>");
    }
    return Answer(rd_kafka_mock_broker_set_rtt(mc, id, ms));
  }
  if (cmd == "leader") {
    int32_t partition = 0;
    if (w.size() != 4 || !ParseInt(w[2], partition) || partition < 0 || !ParseInt(w[3], id) ||
        !(id == -1 || (id >= 1 && id <= impl_->brokers))) {
      return usage("leader <topic> <partition> <broker-id|-1>");
    }
    return Answer(rd_kafka_mock_partition_set_leader(mc, std::string(w[1]).c_str(), partition, id));
  }
  if (cmd == "errors" || cmd == "broker-errors") {
    const bool per_broker = cmd == "broker-errors";
    const std::size_t base = per_broker ? 2 : 1;
    std::size_t count = 0;
    int rtt = 0;
    const bool shape_ok = per_broker ? (w.size() == 5 || w.size() == 6) : w.size() == 4;
    if (!shape_ok || (per_broker && !broker_id(w[1], id)) || !ParseInt(w[base + 1], count) ||
        count < 1 || count > 1000000 || (w.size() == 6 && (!ParseInt(w[5], rtt) || rtt < 0))) {
      return usage(per_broker ? "broker-errors <broker-id> <ApiKey> <count> <Error> [rtt-ms]"
                              : "errors <ApiKey> <count> <Error>");
    }
    auto key = ParseApiKey(w[base]);
    if (!key.ok()) {
      return "error: " + key.status().message();
    }
    auto err = ParseErrorName(w[base + 2]);
    if (!err.ok()) {
      return "error: " + err.status().message();
    }
    if (!per_broker) {
      std::vector<rd_kafka_resp_err_t> errs(count, *err);
      rd_kafka_mock_push_request_errors_array(mc, *key, count, errs.data());
      return "ok";
    }
    // The per-broker call is variadic (error, rtt) pairs: push them one at a time.
    for (std::size_t i = 0; i < count; ++i) {
      rd_kafka_resp_err_t e =
          rd_kafka_mock_broker_push_request_error_rtts(mc, id, *key, 1, *err, rtt);
      if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return Answer(e);
      }
    }
    return "ok";
  }
  if (cmd == "clear-errors") {
    if (w.size() != 2) {
      return usage("clear-errors <ApiKey>");
    }
    auto key = ParseApiKey(w[1]);
    if (!key.ok()) {
      return "error: " + key.status().message();
    }
    rd_kafka_mock_clear_request_errors(mc, *key);
    return "ok";
  }
  if (cmd == "topic-error") {
    if (w.size() != 3) {
      return usage("topic-error <topic> <Error>");
    }
    auto err = ParseErrorName(w[2]);
    if (!err.ok()) {
      return "error: " + err.status().message();
    }
    rd_kafka_mock_topic_set_error(mc, std::string(w[1]).c_str(), *err);
    return "ok";
  }
  if (cmd == "coordinator") {
    if (w.size() != 4 || (w[1] != "group" && w[1] != "transaction") || !broker_id(w[3], id)) {
      return usage("coordinator <group|transaction> <key> <broker-id>");
    }
    return Answer(rd_kafka_mock_coordinator_set(mc, std::string(w[1]).c_str(),
                                                std::string(w[2]).c_str(), id));
  }
  return "error: unknown command '" + std::string(cmd) + "' (try 'help')";
}

Result<int> DevBroker::ListenControl(int port) {
  Impl& d = *impl_;
  if (d.listen_fd >= 0) {
    return Status::InvalidArgument("the control listener is already running");
  }
  if (port < 0 || port > 65535) {
    return Status::InvalidArgument("control port must be 0..65535");
  }
  d.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (d.listen_fd < 0) {
    return Status::Unavailable(std::string("control socket: ") + std::strerror(errno));
  }
  const int one = 1;
  setsockopt(d.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(d.listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(d.listen_fd, 16) != 0) {
    return Status::Unavailable("cannot listen on 127.0.0.1:" + std::to_string(port) +
                               " for control: " + std::strerror(errno));
  }
  socklen_t len = sizeof(addr);
  getsockname(d.listen_fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (pipe2(d.wake_pipe, O_CLOEXEC) != 0) {
    return Status::Unavailable(std::string("pipe: ") + std::strerror(errno));
  }
  d.execute = [this](std::string_view line) { return Execute(line); };
  d.control_thread = std::thread([this] { impl_->ServeControl(); });
  return static_cast<int>(ntohs(addr.sin_port));
}

void DevBroker::Impl::ServeControl() {
  struct Client {
    int fd;
    std::string in;
  };
  std::vector<Client> clients;
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({wake_pipe[0], POLLIN, 0});
    fds.push_back({listen_fd, POLLIN, 0});
    for (const auto& c : clients) {
      fds.push_back({c.fd, POLLIN, 0});
    }
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      break;
    }
    if (fds[0].revents != 0) {
      break;
    }
    if ((fds[1].revents & POLLIN) != 0) {
      const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        clients.push_back({fd, {}});
      }
    }
    for (std::size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) {
        continue;
      }
      Client& c = clients[i - 2];
      char buf[4096];
      const ssize_t n = read(c.fd, buf, sizeof(buf));
      if (n <= 0) {
        close(c.fd);
        c.fd = -1;
        continue;
      }
      c.in.append(buf, static_cast<std::size_t>(n));
      std::size_t nl;
      while ((nl = c.in.find('\n')) != std::string::npos) {
        std::string answer = execute(std::string_view(c.in).substr(0, nl));
        c.in.erase(0, nl + 1);
        answer.push_back('\n');
        std::size_t off = 0;
        while (off < answer.size()) {
          const ssize_t w = send(c.fd, answer.data() + off, answer.size() - off, MSG_NOSIGNAL);
          if (w <= 0) {
            break;
          }
          off += static_cast<std::size_t>(w);
        }
      }
      if (c.in.size() > (1 << 16)) {  // a "line" this long is not a command
        close(c.fd);
        c.fd = -1;
      }
    }
    std::erase_if(clients, [](const Client& c) { return c.fd < 0; });
  }
  for (const auto& c : clients) {
    close(c.fd);
  }
}

}  // namespace lattice::ingest

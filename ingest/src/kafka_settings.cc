// KafkaSettings parsing and the librdkafka configuration built from it (kafka_conf.h).
#include "lattice/ingest/kafka_settings.h"

#include <cctype>
#include <cstdlib>

#include "kafka_conf.h"

extern char** environ;  // NOLINT: POSIX, for listing LATTICE_KAFKA_* variables

namespace lattice::ingest {

Result<std::pair<std::string, std::string>> ParseKafkaProperty(std::string_view text) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    std::string msg = "Kafka property '";
    msg.append(text);
    msg.append("' must be key=value (e.g. -X linger.ms=5)");
    return Status::InvalidArgument(std::move(msg));
  }
  return std::pair<std::string, std::string>(std::string(text.substr(0, eq)),
                                             std::string(text.substr(eq + 1)));
}

Status ApplyKafkaEnvironment(KafkaSettings& settings) {
  if (settings.brokers.empty()) {
    if (const char* b = std::getenv(std::string(kBrokersEnv).c_str()); b != nullptr) {
      settings.brokers = b;
    }
  }
  std::vector<std::pair<std::string, std::string>> from_env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    if (entry.substr(0, kKafkaEnvPrefix.size()) != kKafkaEnvPrefix) {
      continue;
    }
    const auto eq = entry.find('=');
    std::string_view name = entry.substr(kKafkaEnvPrefix.size(), eq - kKafkaEnvPrefix.size());
    if (name.empty()) {
      return Status::InvalidArgument("environment variable " + std::string(kKafkaEnvPrefix) +
                                     " needs a property name after the prefix, e.g. " +
                                     std::string(kKafkaEnvPrefix) + "LINGER_MS=5");
    }
    std::string key;
    key.reserve(name.size());
    for (char c : name) {
      key.push_back(c == '_' ? '.'
                             : static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    from_env.emplace_back(std::move(key), std::string(entry.substr(eq + 1)));
  }
  settings.properties.insert(settings.properties.begin(), from_env.begin(), from_env.end());
  return Status::Ok();
}

Result<std::string> RequireBrokers(const KafkaSettings& settings) {
  std::string brokers = settings.brokers;
  if (brokers.empty()) {
    for (const auto& [k, v] : settings.properties) {
      if (k == "bootstrap.servers" || k == "metadata.broker.list") {
        brokers = v;
      }
    }
  }
  if (brokers.empty()) {
    return Status::InvalidArgument(
        "no Kafka brokers given: use --brokers HOST:PORT[,...], the environment variable " +
        std::string(kBrokersEnv) +
        ", or -X bootstrap.servers=... (`lattice broker` starts a "
        "development cluster and prints its address)");
  }
  return brokers;
}

namespace internal {

Status SetKafkaProperty(rd_kafka_conf_t* conf, std::string_view key, std::string_view value) {
  char errstr[512];
  const std::string k(key), v(value);
  if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
    std::string msg = "Kafka property '";
    msg.append(k).append("=").append(v).append("': ").append(errstr);
    return Status::InvalidArgument(std::move(msg));
  }
  return Status::Ok();
}

Result<KafkaConf> BuildKafkaConf(const KafkaSettings& settings, const KafkaProperties& defaults,
                                 bool require_brokers) {
  KafkaConf conf(rd_kafka_conf_new());
  for (const auto& [k, v] : defaults) {
    LATTICE_RETURN_IF_ERROR(SetKafkaProperty(conf.get(), k, v));
  }
  for (const auto& [k, v] : settings.properties) {
    LATTICE_RETURN_IF_ERROR(SetKafkaProperty(conf.get(), k, v));
  }
  if (!settings.brokers.empty()) {
    LATTICE_RETURN_IF_ERROR(SetKafkaProperty(conf.get(), "bootstrap.servers", settings.brokers));
  } else if (require_brokers) {
    LATTICE_RETURN_IF_ERROR(RequireBrokers(settings).status());
  }
  return conf;
}

Result<KafkaHandle> NewKafkaHandle(rd_kafka_type_t type, KafkaConf conf) {
  char errstr[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), errstr, sizeof(errstr));
  if (rk == nullptr) {
    return Status::InvalidArgument(std::string("cannot create the Kafka client: ") + errstr);
  }
  (void)conf.release();  // rd_kafka_new() took it
  return KafkaHandle(rk);
}

std::string KafkaErrorText(rd_kafka_resp_err_t err) {
  std::string s = rd_kafka_err2name(err);
  s.append(": ").append(rd_kafka_err2str(err));
  return s;
}

}  // namespace internal
}  // namespace lattice::ingest

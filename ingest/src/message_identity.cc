// The message -> envelope rule (see message_identity.h).
#include "lattice/ingest/message_identity.h"

#include <charconv>

namespace lattice::ingest {

MessageIdentity::MessageIdentity(std::string default_blade)
    : default_blade_(std::move(default_blade)) {}

Result<MessageEnvelope> MessageIdentity::Identify(const MessageFields& message) {
  MessageEnvelope env;
  if (message.key.has_value() && !message.key->empty()) {
    env.blade = *message.key;
  } else {
    scratch_.assign(default_blade_);
    scratch_.push_back('/');
    char digits[16];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, message.partition);
    scratch_.append(digits, end);
    env.blade = scratch_;
  }
  if (message.seq_header.has_value()) {
    const std::string_view text = *message.seq_header;
    std::uint64_t seq = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), seq);
    if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
      std::string shown(text.substr(0, 40));
      return Status::InvalidArgument("header " + std::string(kSeqHeader) + " '" + shown +
                                     "' is not a decimal integer in 0..18446744073709551615");
    }
    env.seq = seq;
  } else {
    env.seq = static_cast<std::uint64_t>(message.offset);
  }
  env.ts = message.timestamp_ms.value_or(0);
  return env;
}

}  // namespace lattice::ingest

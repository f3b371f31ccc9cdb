#include "launcher/replicas.h"

#include <algorithm>
#include <cstring>

#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/generate/wire.h"

namespace gptj {

namespace {

using Clock = std::chrono::steady_clock;

enum MessageKind : int { kSubmit = 1, kCancel = 2, kHeartbeat = 3, kStop = 4, kReport = 5 };

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Adds the lifetime of the object to `total` (seconds).
struct Timed {
  explicit Timed(double& total) : total(total) {}
  ~Timed() { total += seconds_since(start); }
  double& total;
  Clock::time_point start = Clock::now();
};

double own_allowance(const ReplicaTimeouts& t) {
  return t.watchdog ? t.watchdog->allowance_for(t.max_step_tokens) : 0.0;
}

// [allowance][payload]
std::vector<uint8_t> with_allowance(double allowance_s, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> bytes(sizeof(double) + payload.size());
  std::memcpy(bytes.data(), &allowance_s, sizeof(double));
  std::copy(payload.begin(), payload.end(), bytes.begin() + sizeof(double));
  return bytes;
}

double split_allowance(std::vector<uint8_t>& bytes) {
  wire::Reader r(bytes.data(), bytes.size());
  const double allowance = r.get<double>();
  bytes.erase(bytes.begin(), bytes.begin() + sizeof(double));
  return allowance;
}

std::vector<uint8_t> encode_u64(uint64_t value) {
  wire::Writer w;
  w.put(value);
  return w.take();
}

uint64_t decode_u64(const std::vector<uint8_t>& bytes) {
  wire::Reader r(bytes.data(), bytes.size());
  const uint64_t value = r.get<uint64_t>();
  r.expect_end();
  return value;
}

constexpr double kInterval = StepWatchdog::kKeepaliveIntervalS;

// The longest silence allowed from the other side of the link: the start-up limit before its first
// word, then the silence limit stretched by the step allowance it announced last.
double silence_limit(const ReplicaTimeouts& t, bool heard, double peer_allowance_s) {
  return heard ? t.silence_s + peer_allowance_s : t.startup_s;
}

}  // namespace

// ---- rank 0 ----------------------------------------------------------------------------------

DataParallelEngine::DataParallelEngine(Scheduler& local, World& world, const ReplicaTimeouts& timeouts)
    : local_(local), link_(*world.replica_link()), timeouts_(timeouts),
      prefixes_(local.options().kv.block_size) {
  const ReplicaLayout& layout = world.replicas();
  const auto now = Clock::now();
  replicas_.resize(static_cast<std::size_t>(layout.count));
  for (int r = 0; r < layout.count; ++r) {
    Remote& remote = replicas_[r];
    remote.rank = layout.leader_rank(r);
    remote.host = world.hosts()[remote.rank];
    remote.last_heard = remote.last_sent = now;
    remote.stats.ready = r == 0;
  }
}

DataParallelEngine::~DataParallelEngine() { stop(1, std::chrono::milliseconds(200)); }

std::vector<ReplicaLoad> DataParallelEngine::loads() const {
  std::vector<ReplicaLoad> loads(replicas_.size());
  const ReplicaStats mine = local_.stats();
  loads[0] = {true, mine.running + mine.waiting, mine.kv_blocks_free};
  for (std::size_t r = 1; r < replicas_.size(); ++r)
    loads[r] = {replicas_[r].stats.ready, replicas_[r].outstanding, replicas_[r].stats.kv_blocks_free};
  return loads;
}

void DataParallelEngine::submit(GenerationRequest request) {
  Timed timed(frontend_s_);
  GPTJ_CHECK(!stopped_, "the data-parallel engine has stopped");
  local_.check(request);  // every replica has the same limits: refuse here, not on a remote rank
  const int slack = std::max(1, local_.options().max_batch / 4);
  const int replica = choose_replica(loads(), prefixes_.lookup(request.prompt), slack);
  prefixes_.remember(request.prompt, replica);
  const int n = std::max(request.n, 1);
  for (int k = 0; k < n; ++k) owner_[request.handle + k] = replica;
  if (replica == 0) {
    local_.submit(std::move(request));
    return;
  }
  Remote& remote = replicas_[replica];
  remote.outstanding += n;
  remote_outstanding_ += n;
  for (int k = 0; k < n; ++k) tokens_[request.handle + k];
  send(remote, kSubmit, wire::encode_request(request));
  ++remote_requests_;
}

void DataParallelEngine::cancel(uint64_t handle) {
  const auto it = owner_.find(handle);
  if (it == owner_.end()) return;
  if (it->second == 0)
    local_.cancel(handle);
  else
    send(replicas_[it->second], kCancel, encode_u64(handle));
}

bool DataParallelEngine::idle() const { return local_.idle() && remote_outstanding_ == 0; }

int DataParallelEngine::queue_room() const {
  // Each replica's batch plus twice that queued ahead (as one Scheduler's look-ahead).
  const int target = 3 * local_.options().max_batch;
  int room = 0;
  for (const ReplicaLoad& load : loads())
    if (load.ready) room += std::max(0, target - load.outstanding);
  return room;
}

ReplicaStats DataParallelEngine::stats(int replica) const {
  if (replica == 0) return local_.stats();
  ReplicaStats s = replicas_[replica].stats;
  // Sequences sent but not yet running there count as waiting (whether they sit in a message or
  // in its queue).
  s.waiting = std::max(0, replicas_[replica].outstanding - s.running);
  return s;
}

int DataParallelEngine::replica_of(uint64_t handle) const {
  if (const auto it = owner_.find(handle); it != owner_.end()) return it->second;
  const auto it = finished_on_.find(handle);
  return it == finished_on_.end() ? -1 : it->second;
}

void DataParallelEngine::send(Remote& to, int kind, const std::vector<uint8_t>& payload) {
  link_.send(to.rank, kind, with_allowance(own_allowance(timeouts_), payload));
  to.last_sent = Clock::now();
}

void DataParallelEngine::receive(LinkMessage& message, std::vector<GenerationEvent>& events) {
  Timed timed(frontend_s_);
  int replica = 1;
  while (replica < static_cast<int>(replicas_.size()) && replicas_[replica].rank != message.from) ++replica;
  GPTJ_CHECK(replica < static_cast<int>(replicas_.size()), "a replica message came from rank {}, which leads no replica",
             message.from);
  Remote& remote = replicas_[replica];
  std::vector<uint8_t>& bytes = message.bytes;
  remote.allowance_s = split_allowance(bytes);
  remote.last_heard = Clock::now();
  GPTJ_CHECK(message.kind == kReport || message.kind == kHeartbeat, "rank {} sent a message of unknown kind {}",
             message.from, message.kind);
  std::vector<wire::WireEvent> received;
  wire::decode_report(bytes, remote.stats, received);
  if (!remote.stats.ready) spdlog::debug("replica {} (rank {} on {}) is ready", replica, remote.rank, remote.host);
  remote.stats.ready = true;
  for (wire::WireEvent& w : received) {
    GenerationEvent& e = w.event;
    auto tokens = tokens_.find(e.handle);
    GPTJ_CHECK(tokens != tokens_.end(), "replica {} reported handle {}, which it was not given", replica, e.handle);
    if (e.choice.token >= 0) tokens->second.push_back(e.choice.token);
    if (e.finish == FinishReason::kNone) {
      e.generated = &tokens->second;
    } else {
      finished_tokens_.push_back(std::move(w.final_tokens));
      e.generated = &finished_tokens_.back();
      tokens_.erase(tokens);
      owner_.erase(e.handle);
      finished_on_[e.handle] = replica;
      --remote.outstanding;
      --remote_outstanding_;
    }
    events.push_back(std::move(e));
  }
}

std::vector<GenerationEvent> DataParallelEngine::step() {
  finished_tokens_.clear();
  finished_on_.clear();
  std::vector<GenerationEvent> events;
  while (auto message = link_.poll()) receive(*message, events);
  if (!local_.idle()) {
    std::vector<GenerationEvent> mine = local_.step();
    for (const GenerationEvent& e : mine)
      if (e.finish != FinishReason::kNone) {
        owner_.erase(e.handle);
        finished_on_[e.handle] = 0;
      }
    events.insert(events.end(), std::make_move_iterator(mine.begin()), std::make_move_iterator(mine.end()));
  } else if (events.empty() && remote_outstanding_ > 0) {
    // Nothing to run here: wait a little for the other replicas' reports instead of spinning.
    if (auto message = link_.wait(std::chrono::milliseconds(2))) receive(*message, events);
  }
  keepalive_if_due();
  check_silence();
  return events;
}

void DataParallelEngine::wait_until_ready() {
  std::vector<GenerationEvent> none;
  while (!std::all_of(replicas_.begin(), replicas_.end(), [](const Remote& r) { return r.stats.ready; })) {
    if (auto message = link_.wait(std::chrono::milliseconds(20))) receive(*message, none);
    keepalive_if_due();
    check_silence();
  }
}

std::string DataParallelEngine::frontend_summary() const {
  return fmt::format("front-end: {} requests dispatched to other replicas, {} link messages ({:.1f} MB), {:.3f} s of "
                     "rank 0's time in dispatch and reports ({:.0f} us per request dispatched)",
                     remote_requests_, link_.messages(), link_.bytes() / 1e6, frontend_s_,
                     remote_requests_ ? 1e6 * frontend_s_ / remote_requests_ : 0.0);
}

void DataParallelEngine::check_silence() {
  if (timeouts_.silence_s <= 0) return;
  for (std::size_t r = 1; r < replicas_.size(); ++r) {
    const Remote& remote = replicas_[r];
    const double limit = silence_limit(timeouts_, remote.stats.ready, remote.allowance_s);
    const double silent = seconds_since(remote.last_heard);
    GPTJ_CHECK(silent <= limit,
               "replica {} (leader rank {} on {}) sent nothing for {:.0f} s{}: it is stopped, hung or unreachable; "
               "ending the job",
               r, remote.rank, remote.host, silent, remote.stats.ready ? "" : " since the job started");
  }
}

void DataParallelEngine::keepalive_if_due() {
  local_.keepalive_if_due();
  if (stopped_) return;
  for (std::size_t r = 1; r < replicas_.size(); ++r)
    if (seconds_since(replicas_[r].last_sent) >= kInterval) send(replicas_[r], kHeartbeat, {});
}

Clock::time_point DataParallelEngine::keepalive_due() const {
  Clock::time_point due = local_.keepalive_due();
  if (stopped_) return due;
  for (std::size_t r = 1; r < replicas_.size(); ++r) {
    const auto when = replicas_[r].last_sent + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(kInterval));
    due = std::min(due, when);
  }
  // The others' reports are waited for too: an idle front-end looks at the link at least this often.
  return remote_outstanding_ > 0 ? std::min(due, Clock::now() + std::chrono::milliseconds(2)) : due;
}

void DataParallelEngine::stop(int exit_code, std::chrono::milliseconds delivery_wait) {
  if (stopped_) return;
  stopped_ = true;
  for (std::size_t r = 1; r < replicas_.size(); ++r)
    send(replicas_[r], kStop, encode_u64(static_cast<uint64_t>(static_cast<uint32_t>(exit_code))));
  if (!link_.flush(delivery_wait))
    spdlog::warn("a replica leader did not take its stop message within {:.1f} s", delivery_wait.count() / 1e3);
}

// ---- the other leaders -----------------------------------------------------------------------

int run_replica_leader(Scheduler& scheduler, World& world, const ReplicaTimeouts& timeouts) {
  ReplicaLink& link = *world.replica_link();
  const ReplicaLayout& layout = world.replicas();
  auto report = [&](const std::vector<GenerationEvent>& events) {
    link.send(0, events.empty() ? kHeartbeat : kReport,
              with_allowance(own_allowance(timeouts), wire::encode_report(scheduler.stats(), events)));
  };
  report({});  // the first word: loaded, ready for requests
  auto last_sent = Clock::now(), last_heard = Clock::now();
  double rank0_allowance = 0;
  bool heard = false;
  std::optional<int> exit_code;
  auto handle = [&](LinkMessage& m) {
    GPTJ_CHECK(m.from == 0, "replica {}'s leader got a message from rank {} (only rank 0 sends them)", layout.index,
               m.from);
    rank0_allowance = split_allowance(m.bytes);
    last_heard = Clock::now();
    heard = true;
    switch (m.kind) {
      case kSubmit: scheduler.submit(wire::decode_request(m.bytes)); break;
      case kCancel: scheduler.cancel(decode_u64(m.bytes)); break;
      case kHeartbeat: break;
      case kStop: exit_code = static_cast<int>(static_cast<uint32_t>(decode_u64(m.bytes))); break;
      default: fail("rank 0 sent a message of unknown kind {}", m.kind);
    }
  };
  while (!exit_code) {
    while (auto m = link.poll()) handle(*m);
    if (exit_code) break;
    if (!scheduler.idle()) {
      report(scheduler.step());
      last_sent = Clock::now();
    } else {
      scheduler.keepalive_if_due();
      if (auto m = link.wait(std::chrono::milliseconds(20))) handle(*m);
    }
    if (seconds_since(last_sent) >= kInterval) {
      report({});
      last_sent = Clock::now();
    }
    if (timeouts.silence_s > 0) {
      const double limit = silence_limit(timeouts, heard, rank0_allowance);
      const double silent = seconds_since(last_heard);
      GPTJ_CHECK(silent <= limit,
                 "rank {} (leader of replica {} on {}): rank 0 sent nothing for {:.0f} s: it is stopped, hung or "
                 "unreachable; ending the job",
                 world.rank(), layout.index, world.host(), silent);
    }
  }
  link.flush(std::chrono::milliseconds(2000));
  return *exit_code;
}

}  // namespace gptj

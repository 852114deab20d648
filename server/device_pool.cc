#include "server/device_pool.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "devices/device_kinds.h"

namespace accllm::server {
namespace {

double Occupancy(const Scheduler::Load& load) {
  return static_cast<double>(load.running + load.waiting) / std::max(1, load.max_running);
}

}  // namespace

absl::StatusOr<std::vector<DeviceSpec>> ParseDeviceList(const std::string& list) {
  std::vector<DeviceSpec> specs;
  for (absl::string_view item : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    std::vector<absl::string_view> parts = absl::StrSplit(item, ':');
    DeviceSpec spec;
    spec.kind = std::string(parts[0]);
    if (absl::StatusOr<const DeviceKind*> kind = FindDeviceKind(spec.kind); !kind.ok()) {
      return absl::InvalidArgumentError(kind.status().message());
    }
    spec.count_given = parts.size() == 2;
    if (parts.size() > 2 || (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &spec.count) || spec.count < 1 ||
                                                   spec.count > 64))) {
      return absl::InvalidArgumentError(absl::StrCat("bad device entry '", item, "': want kind or kind:count (1-64)"));
    }
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) return absl::InvalidArgumentError("no devices given");
  return specs;
}

absl::StatusOr<FallbackPolicy> ParseFallbackPolicy(const std::string& name) {
  if (name == "when-full") return FallbackPolicy::kWhenFull;
  if (name == "never") return FallbackPolicy::kNever;
  if (name == "balance") return FallbackPolicy::kBalance;
  return absl::InvalidArgumentError(absl::StrCat("unknown fallback policy '", name, "' (when-full, never, balance)"));
}

const char* FallbackPolicyName(FallbackPolicy policy) {
  switch (policy) {
    case FallbackPolicy::kWhenFull: return "when-full";
    case FallbackPolicy::kNever: return "never";
    case FallbackPolicy::kBalance: return "balance";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<DevicePool>> DevicePool::Create(const DevicePoolOptions& options,
                                                               const BackendOptions& backend,
                                                               const SchedulerOptions& scheduler, const AnyModel& model,
                                                               const Tokenizer& tokenizer) {
  absl::StatusOr<std::vector<DeviceSpec>> specs = ParseDeviceList(options.devices);
  if (!specs.ok()) return specs.status();
  auto pool = std::unique_ptr<DevicePool>(new DevicePool(options));
  for (const DeviceSpec& spec : *specs) {
    const DeviceKind& kind = **FindDeviceKind(spec.kind);
    int count = spec.count;
    if (kind.available != nullptr) {
      std::string why_none;
      const int found = kind.available(&why_none);
      if (spec.count_given && found < spec.count) {
        return absl::UnavailableError(absl::StrCat(spec.kind, ":", spec.count, " asked for, ", found, " found",
                                                   found == 0 ? " (" + why_none + ")" : ""));
      }
      if (!spec.count_given) count = found;
      if (count == 0) pool->notes_.push_back(absl::StrCat(spec.kind, ": ", why_none));
    }
    for (int i = 0; i < count; ++i) {
      BackendOptions device_options = backend;
      device_options.device_index = i;
      absl::StatusOr<std::unique_ptr<Backend>> made = kind.make(device_options, model);
      if (!made.ok()) {
        // Left out; the others serve. Only a pool with no device at all is an error.
        pool->left_out_.push_back(absl::StrCat("device ", spec.kind, ":", i, " left out: ", made.status().message()));
        continue;
      }
      SchedulerOptions device_scheduler = scheduler;
      device_scheduler.device = absl::StrCat(spec.kind, ":", i);
      const std::size_t index = pool->devices_.size();
      DevicePool* self = pool.get();
      auto on_failure = [self, index](std::vector<std::unique_ptr<InFlightRequest>> requests, const absl::Status& error) {
        self->Rehome(index, std::move(requests), error);
      };
      pool->devices_.push_back({device_scheduler.device, !kind.accelerator,
                                std::make_unique<DeviceWorker>(std::move(*made), tokenizer, device_scheduler, on_failure)});
      pool->has_accelerators_ |= kind.accelerator;
    }
  }
  if (pool->devices_.empty()) {
    std::string why;
    for (const std::string& note : pool->notes_) absl::StrAppend(&why, "; ", note);
    for (const std::string& note : pool->left_out_) absl::StrAppend(&why, "; ", note);
    return absl::UnavailableError(absl::StrCat("no device to serve on (", options.devices, ")", why));
  }
  return pool;
}

absl::StatusOr<std::string> DevicePool::Submit(ScheduledRequest request) {
  std::lock_guard<std::mutex> lock(place_mutex_);
  std::vector<Scheduler::Load> loads;
  for (const Device& d : devices_) loads.push_back(d.worker->scheduler().load());

  auto usable = [&](const Device& d) {
    return d.worker->healthy() && !(d.fallback && has_accelerators_ && options_.fallback == FallbackPolicy::kNever);
  };
  // The least-occupied usable device among those `eligible` accepts; -1 if none.
  auto pick = [&](auto eligible) {
    int best = -1;
    for (int i = 0; i < static_cast<int>(devices_.size()); ++i) {
      if (!usable(devices_[i]) || !eligible(i)) continue;
      if (best < 0 || Occupancy(loads[i]) < Occupancy(loads[best])) best = i;
    }
    return best;
  };
  auto has_room = [&](int i) { return devices_[i].worker->scheduler().HasRoomFor(request); };
  int chosen = -1;
  if (options_.fallback == FallbackPolicy::kBalance) {
    chosen = pick(has_room);
  } else {
    chosen = pick([&](int i) { return !devices_[i].fallback && has_room(i); });
    if (chosen < 0) chosen = pick([&](int i) { return devices_[i].fallback && has_room(i); });
  }

  // Nobody has room now: queue where the queue is shortest, accelerators first.
  std::vector<int> order;
  if (chosen >= 0) order.push_back(chosen);
  std::vector<int> rest;
  for (int i = 0; i < static_cast<int>(devices_.size()); ++i) {
    if (i != chosen && usable(devices_[i])) rest.push_back(i);
  }
  std::stable_sort(rest.begin(), rest.end(), [&](int a, int b) {
    if (devices_[a].fallback != devices_[b].fallback && options_.fallback != FallbackPolicy::kBalance) {
      return !devices_[a].fallback;
    }
    return loads[a].waiting < loads[b].waiting;
  });
  order.insert(order.end(), rest.begin(), rest.end());

  if (order.empty()) {
    return absl::UnavailableError("no healthy device: every device this request may use has failed");
  }
  absl::Status last = absl::ResourceExhaustedError("no device can take the request");
  absl::Status out_of_range;  // kept apart: a device that is full is the better answer to give
  bool have_other = false;
  for (int i : order) {
    const bool last_try = i == order.back();
    ScheduledRequest copy = last_try ? std::move(request) : request;
    absl::StatusOr<uint64_t> id = devices_[i].worker->Submit(std::move(copy));
    if (id.ok()) {
      if (devices_[i].fallback && has_accelerators_) fallbacks_.fetch_add(1);
      return devices_[i].name;
    }
    // A bad request is bad everywhere; a full queue, too small a pool, a device whose limits it
    // exceeds or a device that has just failed may not be.
    if (absl::IsOutOfRange(id.status())) {
      out_of_range = id.status();
      continue;
    }
    if (!absl::IsResourceExhausted(id.status()) && !absl::IsUnavailable(id.status())) return id.status();
    last = id.status();
    have_other = true;
  }
  return have_other || out_of_range.ok() ? last : out_of_range;
}

void DevicePool::Rehome(std::size_t from, std::vector<std::unique_ptr<InFlightRequest>> requests,
                        const absl::Status& error) {
  device_failures_.fetch_add(1);
  // Told first, so that health reflects the failure before any stream of it ends.
  if (options_.on_device_failure) {
    const bool any_healthy =
        std::any_of(devices_.begin(), devices_.end(), [](const Device& d) { return d.worker->healthy(); });
    options_.on_device_failure(absl::StrCat("device ", devices_[from].name, " failed: ", error.message(),
                                            "; it takes no more work; moving its ", requests.size(), " streams"),
                               any_healthy);
  }
  int moved = 0;
  for (auto& r : requests) {
    // The healthy devices that can hold it, accelerators first, least occupied; a device that
    // fails while taking it gives it back and the next one is tried.
    std::vector<std::pair<double, std::size_t>> candidates;
    for (std::size_t i = 0; i < devices_.size(); ++i) {
      const Device& d = devices_[i];
      if (i == from || !d.worker->scheduler().CanAdopt(r->request)) continue;
      candidates.emplace_back(Occupancy(d.worker->scheduler().load()) + (d.fallback ? 1e6 : 0), i);
    }
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [occupancy, i] : candidates) {
      r = devices_[i].worker->Adopt(std::move(r));
      if (r == nullptr) break;
    }
    if (r == nullptr) {
      ++moved;
      continue;
    }
    StreamEvent last;
    last.request_id = r->id;
    last.finish = FinishReason::kError;
    last.error = absl::UnavailableError(
        absl::StrCat("device ", devices_[from].name, " failed (", error.message(), ") and no other device can take the stream"));
    last.device = devices_[from].name;
    last.prompt_tokens = static_cast<int>(r->request.prompt_ids.size());
    last.generated_tokens = r->stream ? static_cast<int>(r->stream->generated().size()) : 0;
    if (r->request.on_event) r->request.on_event(last);
  }
  moved_requests_.fetch_add(moved);
}

void DevicePool::WakeAll() {
  for (Device& d : devices_) d.worker->Wake();
}

void DevicePool::CancelAllAndWait() {
  for (Device& d : devices_) d.worker->CancelAllAndWait();
}

bool DevicePool::Idle() const {
  for (const Device& d : devices_) {
    const Scheduler::Load load = d.worker->scheduler().load();
    if (load.running > 0 || load.waiting > 0) return false;
  }
  return true;
}

}  // namespace accllm::server

#include "runtime/cpu/cpu_placement.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace accllm {
namespace {

int ReadTopology(int cpu, const char* field) {
  std::ifstream in(absl::StrCat("/sys/devices/system/cpu/cpu", cpu, "/topology/", field));
  int value = -1;
  return in >> value ? value : -1;
}

}  // namespace

std::vector<int> PlacementOrder() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return {};
  // (sibling rank, package, core, cpu): the first CPU seen of a (package, core) has rank 0.
  std::vector<std::tuple<int, int, int, int>> keyed;
  std::map<std::pair<int, int>, int> seen;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    const int package = ReadTopology(cpu, "physical_package_id"), core = ReadTopology(cpu, "core_id");
    if (package < 0 || core < 0) {
      keyed.emplace_back(1 << 20, 0, 0, cpu);  // unknown topology: after every known CPU
      continue;
    }
    const int rank = seen[{package, core}]++;
    keyed.emplace_back(rank, package, core, cpu);
  }
  std::sort(keyed.begin(), keyed.end());
  std::vector<int> order;
  for (const auto& k : keyed) order.push_back(std::get<3>(k));
  return order;
}

absl::Status PinCurrentThread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (const int err = pthread_setaffinity_np(pthread_self(), sizeof set, &set); err != 0) {
    return absl::InternalError(absl::StrCat("cannot pin a thread to CPU ", cpu, " (error ", err, ")"));
  }
  return absl::OkStatus();
}

}  // namespace accllm

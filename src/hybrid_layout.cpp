#include "hybrid_layout.h"

#include <unistd.h>

#include <string>

#include "ringattn/ringattn_ring.h"

namespace ringattn {
namespace {

// FNV-1a of this host's name: equal on the ranks of one host, different across hosts (a
// collision would only merge two hosts' placement).
int64_t host_id() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return 0;
  uint64_t h = 1469598103934665603ull;
  for (const char* c = name; *c != '\0'; ++c) {
    h ^= static_cast<unsigned char>(*c);
    h *= 1099511628211ull;
  }
  return static_cast<int64_t>(h >> 1);
}

const char* placement_name(int64_t p) {
  return p == RINGATTN_PLACEMENT_ULYSSES_CONSECUTIVE ? "ulysses-consecutive"
         : p == RINGATTN_PLACEMENT_RING_CONSECUTIVE  ? "ring-consecutive"
         : p == RINGATTN_PLACEMENT_AUTO              ? "auto"
                                                     : "?";
}

// This rank's own checks of its options.
Status check_local(const comm::Transport* t, int32_t U, int32_t placement) {
  const int P = t->size();
  if (placement < RINGATTN_PLACEMENT_ULYSSES_CONSECUTIVE || placement > RINGATTN_PLACEMENT_AUTO) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "rank %d: 'options'.placement has an unknown value %d", t->rank(), placement);
  }
  if (P % U != 0) {
    return set_errorf(RINGATTN_ERROR_INVALID_ARGUMENT,
                      "rank %d: 'options'.ulysses_degree %d does not divide the world size %d",
                      t->rank(), U, P);
  }
  if (U > 1 && !t->moves_data()) {
    return set_error(RINGATTN_ERROR_UNSUPPORTED,
                     "'options'.ulysses_degree > 1 needs a transport that moves data (not a "
                     "compute-only context)");
  }
  return RINGATTN_SUCCESS;
}

// Members for AUTO: Ulysses groups of U consecutive ranks (in rank order) inside each host, hosts
// in order of their lowest rank; ring positions follow the groups in that order.
Status auto_members(const std::vector<int64_t>& hosts, int32_t U, int32_t me,
                    std::vector<int32_t>* members) {
  const int P = static_cast<int>(hosts.size());
  std::vector<char> taken(static_cast<size_t>(P), 0);
  members->clear();
  for (int first = 0; first < P; ++first) {
    if (taken[first]) continue;
    std::vector<int32_t> host;
    for (int r = first; r < P; ++r) {
      if (hosts[r] == hosts[first]) {
        host.push_back(r);
        taken[r] = 1;
      }
    }
    if (host.size() % static_cast<size_t>(U) != 0) {
      return set_errorf(RINGATTN_ERROR_UNSUPPORTED,
                        "rank %d: placement auto: the host of rank %d holds %zu ranks, not a "
                        "multiple of ulysses_degree %d",
                        me, first, host.size(), U);
    }
    members->insert(members->end(), host.begin(), host.end());
  }
  return RINGATTN_SUCCESS;
}

}  // namespace

std::vector<int> HybridLayout::ring_group() const {
  std::vector<int> g;
  for (int32_t s = 0; s < rings; ++s) g.push_back(member(s, uly_rank));
  return g;
}

std::vector<int> HybridLayout::ulysses_group() const {
  std::vector<int> g;
  for (int32_t u = 0; u < ulysses; ++u) g.push_back(member(ring_rank, u));
  return g;
}

Status agree_hybrid_layout(comm::Transport* t, int32_t ulysses, int32_t placement,
                           HybridLayout* out) {
  const int P = t->size(), me = t->rank();
  const int32_t U = ulysses > 1 ? ulysses : 1;
  const Status local = check_local(t, U, placement);
  const std::string local_msg = local == RINGATTN_SUCCESS ? std::string() : last_error();
  constexpr int kN = 4;
  const int64_t mine[kN] = {local, U, placement, host_id()};
  std::vector<int64_t> all(static_cast<size_t>(P) * kN);
  const Status ag = t->allgather_i64(mine, kN, all.data());
  if (ag != RINGATTN_SUCCESS) {
    return local != RINGATTN_SUCCESS ? set_error(local, local_msg) : set_error(ag, t->error());
  }
  auto at = [&](int r, int f) { return all[static_cast<size_t>(r) * kN + f]; };
  for (int r = 0; r < P; ++r) {
    if (at(r, 0) == RINGATTN_SUCCESS) continue;
    if (local != RINGATTN_SUCCESS) return set_error(local, local_msg);
    return set_errorf(static_cast<Status>(at(r, 0)),
                      "rank %d: rank %d rejected its context options (%s); see that rank's error",
                      me, r, ringattn_status_string(static_cast<Status>(at(r, 0))));
  }
  for (int r = 1; r < P; ++r) {
    if (at(r, 1) != at(0, 1) || at(r, 2) != at(0, 2)) {
      return set_errorf(RINGATTN_ERROR_MISMATCH,
                        "rank %d: ranks disagree on the hybrid layout: rank 0 has ulysses_degree "
                        "%lld, placement %s; rank %d has ulysses_degree %lld, placement %s",
                        me, static_cast<long long>(at(0, 1)), placement_name(at(0, 2)), r,
                        static_cast<long long>(at(r, 1)), placement_name(at(r, 2)));
    }
  }
  HybridLayout L;
  L.world = P;
  L.rank = me;
  L.ulysses = U;
  L.rings = P / U;
  L.placement = placement;
  L.members.resize(static_cast<size_t>(P));
  if (U > 1 && placement == RINGATTN_PLACEMENT_AUTO) {
    std::vector<int64_t> hosts(static_cast<size_t>(P));
    for (int r = 0; r < P; ++r) hosts[r] = at(r, 3);
    RINGATTN_RETURN_IF_ERROR(auto_members(hosts, U, me, &L.members));
  } else {
    for (int32_t s = 0; s < L.rings; ++s) {
      for (int32_t u = 0; u < U; ++u) {
        L.members[static_cast<size_t>(s) * U + u] =
            placement == RINGATTN_PLACEMENT_RING_CONSECUTIVE ? u * L.rings + s : s * U + u;
      }
    }
  }
  for (int32_t s = 0; s < L.rings; ++s) {
    for (int32_t u = 0; u < U; ++u) {
      if (L.member(s, u) == me) {
        L.ring_rank = s;
        L.uly_rank = u;
      }
    }
  }
  *out = L;
  return RINGATTN_SUCCESS;
}

Status split_heads(int64_t hq, int64_t hkv, int32_t ulysses, HeadSplit* out) {
  HeadSplit h;
  h.group = hq / hkv;
  if (hq % ulysses != 0) {
    return set_errorf(RINGATTN_ERROR_UNSUPPORTED,
                      "Hq=%lld query heads do not split over ulysses_degree %d ranks (uneven "
                      "head splits are not supported)",
                      static_cast<long long>(hq), ulysses);
  }
  h.hq = hq / ulysses;
  if (h.hq % h.group == 0) {
    h.hkv = h.hq / h.group;  // Hkv a multiple of U: each rank its own key/value heads
  } else if (h.group % h.hq == 0) {
    h.hkv = 1;  // Hkv < U: each rank reads one key/value head, shared with others
    h.replicated = true;
  } else {
    return set_errorf(RINGATTN_ERROR_UNSUPPORTED,
                      "Hq=%lld, Hkv=%lld over ulysses_degree %d: each rank's %lld query heads "
                      "would read a part of a GQA group (Hkv must be a multiple of U, or U a "
                      "multiple of Hkv)",
                      static_cast<long long>(hq), static_cast<long long>(hkv), ulysses,
                      static_cast<long long>(h.hq));
  }
  *out = h;
  return RINGATTN_SUCCESS;
}

}  // namespace ringattn

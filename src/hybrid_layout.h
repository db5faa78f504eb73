// The hybrid layout of a context (options.ulysses_degree U > 1): which world ranks form the
// Ulysses (all-to-all) groups and the rings, agreed by every rank at creation, and how the heads
// of a problem split over a Ulysses group. With U = 1 it is the pure ring (one ring of all ranks).
#pragma once

#include <stdint.h>

#include <vector>

#include "status.h"
#include "transport.h"

namespace ringattn {

struct HybridLayout {
  int32_t world = 1, rank = 0;  // P and this rank
  int32_t ulysses = 1;          // U
  int32_t rings = 1;            // R = P / U: the ranks of each ring
  int32_t placement = 0;        // ringattn_placement_t
  // members[s * U + u]: the world rank at ring position s and Ulysses position u. Ring k is
  // {members[s * U + k] : s}; Ulysses group s is {members[s * U + u] : u}.
  std::vector<int32_t> members;
  int32_t ring_rank = 0, uly_rank = 0;  // this rank's s and u

  bool hybrid() const { return ulysses > 1; }
  int32_t member(int32_t s, int32_t u) const {
    return members[static_cast<size_t>(s) * ulysses + u];
  }
  // World ranks of this rank's ring (by ring position) and Ulysses group (by Ulysses position).
  std::vector<int> ring_group() const;
  std::vector<int> ulysses_group() const;
};

// Agree on the layout at context creation (collective over `t`, bounded by its timeout): every
// rank's U (<= 1: 1) and placement are exchanged with its host's name (for AUTO), checked (U
// divides P, a known placement, a transport that moves data when U > 1, hosts holding multiples
// of U ranks for AUTO) and compared; a local error or a difference fails every rank, naming it.
Status agree_hybrid_layout(comm::Transport* t, int32_t ulysses, int32_t placement,
                           HybridLayout* out);

// How a problem's heads split over a Ulysses group of U ranks: rank u computes query heads
// [q_first(u), q_first(u) + hq) and reads key/value heads [kv_first(u), kv_first(u) + hkv).
// `replicated`: Hkv < U, several ranks read the same key/value head (their gradients add up).
struct HeadSplit {
  int64_t hq = 0, hkv = 0;  // per rank
  int64_t group = 1;        // Hq / Hkv of the whole problem
  bool replicated = false;
  int64_t q_first(int32_t u) const { return u * hq; }
  int64_t kv_first(int32_t u) const { return u * hq / group; }
};

// The split of (Hq, Hkv) over U ranks, or RINGATTN_ERROR_UNSUPPORTED naming the numbers.
Status split_heads(int64_t hq, int64_t hkv, int32_t ulysses, HeadSplit* out);

}  // namespace ringattn

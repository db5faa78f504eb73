// The split of one local call (a Q shard's rows against a K/V block's rows, positions from their
// PosMaps, the mask from global positions) into rectangular sub-blocks that a fused attention
// library with only local masks can compute: fully visible rectangles, and square diagonal
// blocks with a top-left causal mask (optionally with a sliding window). Whatever neither form
// can express (pairs of runs with different strides, windows without a right bound, the window's
// ragged edges) is left to our kernels as sub-blocks with exact position maps.
//
// Plain host code (no device), used by the CUDA backend's cuDNN path and tested on the CPU
// against brute-force masks (tests/cpu/test_sub_blocks.cpp).
#pragma once

#include <stdint.h>

#include <vector>

#include "mask.h"
#include "positions.h"

namespace ringattn {

enum SubBlockKind : int32_t {
  kSubFull = 0,    // every (query, key) pair of the rectangle is visible
  kSubCausal = 1,  // square (m == n): local query i sees local key j iff i - window <= j <= i
  kSubOwn = 2      // anything else: our kernels, with the exact positions q_run / k_run
};

struct SubBlock {
  int64_t q0, m;  // local query rows [q0, q0 + m) of the call
  int64_t k0, n;  // local key rows [k0, k0 + n)
  SubBlockKind kind;
  int64_t window;  // kSubCausal: -1 (plain causal) or the window's left side (>= 0, < m - 1)
  // The positions of the rows (one run each side). Exact for kSubOwn and kSubCausal; a kSubFull
  // block made by joining neighbours keeps the first run's sequence and start (its mask needs
  // no positions).
  PosRun q_run, k_run;
};

// Appends the sub-blocks of the call to *out (cleared first). Their union covers every visible
// (query, key) pair exactly once; kSubFull and kSubCausal blocks cover no hidden pair; hidden
// pairs inside kSubOwn blocks are masked by the kernel that runs them. Adjacent kSubFull blocks
// over the same rows (or the same keys) are joined.
void split_sub_blocks(const PosMap& q, const PosMap& k, const MaskSpec& mask,
                      std::vector<SubBlock>* out);

// True when the blocks are one block covering the whole call (sq x sk) that a fused library
// computes on its own (kSubFull or kSubCausal).
bool single_library_block(const std::vector<SubBlock>& blocks, int64_t sq, int64_t sk);

}  // namespace ringattn

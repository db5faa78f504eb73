// The staged device transport's bookkeeping of its two staging buffers per tag (host-only, so
// it runs without a GPU): a relay sends the staged copy only when the block is exactly the last
// receive, the buffers then swap roles, and a buffer is never sent from and received into by the
// same exchange.
#include <gtest/gtest.h>

#include "staging_roles.h"

namespace ringattn {
namespace comm {
namespace {

TEST(StagingRoles, PlainExchangesKeepTheirBuffers) {
  StagingRoles r;
  char dev[2][16];
  for (int i = 0; i < 3; ++i) {
    const StagingRoles::Exchange e = r.begin(dev[i % 2], 16, /*relay_requested=*/false);
    EXPECT_FALSE(e.relayed);
    EXPECT_EQ(e.send, 0);
    EXPECT_EQ(e.recv, 1);
    r.received(dev[1 - i % 2], 16);
  }
}

// The ring's K/V pattern: send buffer A, receive into B; then pass B on, receive into A; ...
TEST(StagingRoles, RingRelaysAlternateTheStagingBuffers) {
  StagingRoles r;
  char dev[2][64];
  StagingRoles::Exchange e = r.begin(dev[0], 64, false);
  EXPECT_FALSE(e.relayed);
  int staged_recv = e.recv;  // the staging buffer that now holds the received block
  r.received(dev[1], 64);
  for (int step = 1; step < 7; ++step) {
    const int cur = step % 2;  // the device buffer received into at the previous step
    e = r.begin(dev[cur], 64, true);
    EXPECT_TRUE(e.relayed) << "step " << step;
    EXPECT_EQ(e.send, staged_recv) << "the staged copy of the last receive goes out";
    EXPECT_NE(e.send, e.recv);
    staged_recv = e.recv;
    r.received(dev[1 - cur], 64);
  }
}

TEST(StagingRoles, RelayNeedsTheLastReceiveUnchangedInBufferAndSize) {
  char dev[3][64];
  {
    StagingRoles r;  // nothing received yet
    EXPECT_FALSE(r.begin(dev[0], 64, true).relayed);
  }
  {
    StagingRoles r;  // another device buffer than the last receive
    r.begin(dev[0], 64, false);
    r.received(dev[1], 64);
    EXPECT_FALSE(r.begin(dev[2], 64, true).relayed);
  }
  {
    StagingRoles r;  // the same buffer, another size
    r.begin(dev[0], 64, false);
    r.received(dev[1], 64);
    EXPECT_FALSE(r.begin(dev[1], 32, true).relayed);
  }
  {
    StagingRoles r;  // a relay is good for one exchange only: the next needs a new receive
    r.begin(dev[0], 64, false);
    r.received(dev[1], 64);
    EXPECT_TRUE(r.begin(dev[1], 64, true).relayed);
    EXPECT_FALSE(r.begin(dev[1], 64, true).relayed);  // no receive completed in between
  }
  {
    StagingRoles r;  // an empty send never relays
    r.begin(dev[0], 0, false);
    r.received(dev[1], 64);
    EXPECT_FALSE(r.begin(dev[1], 0, true).relayed);
  }
  {
    StagingRoles r;  // not asked for: a plain exchange even when it would qualify
    r.begin(dev[0], 64, false);
    r.received(dev[1], 64);
    const StagingRoles::Exchange e = r.begin(dev[1], 64, false);
    EXPECT_FALSE(e.relayed);
    EXPECT_EQ(e.send, 0);
  }
}

}  // namespace
}  // namespace comm
}  // namespace ringattn

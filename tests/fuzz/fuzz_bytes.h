// Reading a fuzzer's input as a stream of small decisions. Past the end every read gives 0, so
// that any prefix of an input is an input too (and the empty input the default problem).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace ringattn {
namespace fuzz {

class FuzzBytes {
 public:
  FuzzBytes(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}

  bool empty() const { return p_ == end_; }

  uint8_t u8() { return p_ < end_ ? *p_++ : 0; }

  // 8 bytes, little-endian, as a two's complement value.
  int64_t raw64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(u8()) << (8 * i);
    return static_cast<int64_t>(v);
  }

  // A value for an integer field whose sensible value is `base`: a mode byte chooses a small
  // value, a boundary of the library's limits (2^31, 2^48, 2^63, ...), a raw 64-bit value, or a
  // step away from `base`, so that mutations land on the edges that validation must hold.
  int64_t value(int64_t base) {
    static const int64_t kSpecial[] = {0,
                                       1,
                                       2,
                                       3,
                                       4,
                                       7,
                                       8,
                                       16,
                                       31,
                                       32,
                                       33,
                                       40,
                                       64,
                                       127,
                                       128,
                                       255,
                                       256,
                                       257,
                                       1024,
                                       65535,
                                       65536,
                                       int64_t{1} << 24,
                                       (int64_t{1} << 31) - 2,
                                       (int64_t{1} << 31) - 1,
                                       int64_t{1} << 31,
                                       (int64_t{1} << 32) - 1,
                                       int64_t{1} << 32,
                                       int64_t{1} << 40,
                                       int64_t{1} << 47,
                                       (int64_t{1} << 48) - 1,
                                       int64_t{1} << 48,
                                       (int64_t{1} << 48) + 1,
                                       int64_t{1} << 56,
                                       (int64_t{1} << 61) - 1,
                                       int64_t{1} << 61,
                                       int64_t{1} << 62,
                                       INT64_MAX,
                                       INT64_MIN,
                                       -1,
                                       -2};
    constexpr int kNumSpecial = sizeof(kSpecial) / sizeof(kSpecial[0]);
    const uint8_t mode = u8() % 8;
    const uint8_t b = u8();
    // Wrapping arithmetic through uint64_t: out-of-range results are what we want here.
    const uint64_t ubase = static_cast<uint64_t>(base);
    switch (mode) {
      case 0:
        return b;
      case 1:
        return static_cast<int8_t>(b);
      case 2:
        return kSpecial[b % kNumSpecial];
      case 3:
        return raw64();
      case 4:
        return static_cast<int64_t>(ubase + static_cast<uint64_t>(static_cast<int8_t>(b)));
      case 5:
        return static_cast<int64_t>(ubase * (b % 5));
      case 6:
        return static_cast<int64_t>(0 - static_cast<uint64_t>(kSpecial[b % kNumSpecial]));
      default:
        return static_cast<int64_t>(static_cast<uint64_t>(kSpecial[b % kNumSpecial]) +
                                    (b & 0x80 ? 1 : static_cast<uint64_t>(-1)));
    }
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace fuzz
}  // namespace ringattn

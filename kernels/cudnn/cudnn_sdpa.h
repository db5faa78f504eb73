// cuDNN's fused attention (SDPA through the cuDNN frontend's graph API) on one rectangular
// block: the local kernel of the CUDA backend's cuDNN path (src/backend_cuda.cpp). Graphs are
// built once per shape, strides and mask (cached for the process) and run on the caller's
// stream. No frontend type appears here: only this library's tensor views.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include <string>

#include "local_params.h"

namespace ringattn {
namespace cudnn {

// One block: queries [B, sq, Hq, D] against keys/values [B, sk, Hkv, D] (element strides,
// d contiguous), float16 or bfloat16. Mask: none, or a top-left causal square (sq == sk) with an
// optional window (query i sees keys i - window .. i).
struct SdpaBlock {
  int64_t batch, sq, sk, hq, hkv, d;
  DType dtype;
  float scale;
  bool causal;
  int64_t window;  // -1: none
  TensorRef q, k, v;
  TensorRef o;           // forward: output (dtype); backward: the forward's output
  RowStatRef lse;        // forward: output; backward: input. Natural-log LSE, float32 [B, Hq, sq]
  TensorRef dout;        // backward: input
  TensorRef dq, dk, dv;  // backward: outputs (dtype)
};

enum class Result {
  kOk = 0,
  kUnsupported = 1,  // cuDNN has no engine for this block here (the caller runs ours)
  kError = 2         // a failure; the message says what
};

// Whether cuDNN can run here (the library loads, a device is present); the reason otherwise.
bool available(std::string* why);
// "9.19.0 (frontend 1.32.0)": the cuDNN runtime's version and the frontend compiled in.
std::string version();

// The block's forward (O and LSE) and backward (dQ, dK, dV from O, dO and LSE), enqueued on
// `stream`. The first call of a shape builds its graph (host work, no device synchronization)
// and sizes the stream's workspace; later calls allocate nothing unless the stream is new.
Result forward(const SdpaBlock& b, cudaStream_t stream, std::string* message);
Result backward(const SdpaBlock& b, cudaStream_t stream, std::string* message);

// Device memory for a call's temporaries on `stream` (at least `bytes`, 256-byte aligned),
// kept per stream and grown stream-ordered; nullptr with *message on failure, or when it would
// have to grow while the stream is being captured into a graph.
void* scratch(size_t bytes, cudaStream_t stream, std::string* message);

}  // namespace cudnn
}  // namespace ringattn

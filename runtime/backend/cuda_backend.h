// CUDA backend: one TP rank's shard of GPT-J on one GPU, in float16 / bfloat16 (float32 optional)
// storage with float32 accumulation. Weights, the paged KV cache and the step workspace live in
// device memory owned by the backend; all work runs on the backend's one CUDA stream, NCCL
// all-reduces included (one per layer). Layout and algorithm: runtime/backend/cuda_backend.cc.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/model/config.h"

namespace gptj {

class Checkpoint;

// True when a CUDA device is visible; otherwise false and *why says why (e.g. "no CUDA device
// (cudaGetDeviceCount: error 35 ...)"). Never throws.
bool cuda_device_available(std::string* why);

// Builds the CUDA backend on GPU `local_rank` of this node (error when the node has more local ranks
// than GPUs). checkpoint == nullptr: random weights generated directly ON THE GPU (counter-based hash,
// normal-ish values * 0.02, layernorm gamma ~1), seeded by `seed`, so a GPT-J-6B shape needs no file.
// options.compute_dtype: "float16", "bfloat16" or "float32". host_comm: the TP group; rank 0
// broadcasts the ncclUniqueId over it when host_comm.size() > 1 (a collective: all ranks call this).
std::unique_ptr<Backend> make_cuda_backend(const GptjConfig& config, const Checkpoint* checkpoint,
                                           uint64_t seed, const BackendOptions& options,
                                           Communicator& host_comm, int local_rank);

}  // namespace gptj

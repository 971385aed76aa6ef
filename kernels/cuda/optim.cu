// Optimizer kernels on CUDA: the multi-tensor AdamW update and the deterministic sum of squares
// behind the global gradient norm (contracts and equations: kernels/cuda/optim_cuda.h).
//
// Both take f32, f64 and bf16 tensors. bf16 elements are read as double and every result stored
// in bf16 is rounded from the double once (value_cast: __double2bfloat16, not through float), so
// pure bf16 training updates its bf16 parameters and moments as the CPU loop of
// optim/adamw.cpp does; their squares are summed in double like the others.
//
// Both walk a list of tensors cut into chunks of kOptimChunk elements. The host uploads one
// descriptor per (non-empty) tensor, holding its pointers, numel and the index of its first chunk
// (ascending); block b of a grid of G blocks takes chunks b, b + G, b + 2G, ... and finds each
// chunk's tensor by binary search over the first-chunk indices. Threads of a block stride over
// the chunk's elements (blockDim = kThreads, no shared memory beyond the block reduction); AdamW
// takes 16-byte packs of them (4 f32, 2 f64 or 8 bf16) where its four tensors are aligned, with
// the same arithmetic, and the rest of a tensor's last chunk element by element.
//
// sum_of_squares is two-stage: stage 1 writes one double partial per block (each thread sums its
// elements in order, then a fixed-shape block reduction), stage 2 (one block) sums the G partials
// the same way. G depends only on the number of chunks, so the result is bitwise reproducible.
#include <algorithm>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/optim_cuda.h"

namespace hla::cuda {

namespace {

constexpr int64_t kOptimChunk = 4096;  // elements per chunk (16 per thread at kThreads = 256)
constexpr int64_t kMaxBlocks = 1024;   // grid cap; also the number of partials of stage 1

template <class T>
struct AdamWDesc {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  int64_t numel;
  int64_t first_chunk;
  double decay;  // 1 - lr * weight_decay, or 1
  int64_t packed;  // all four pointers 16-byte aligned: the chunks move whole Pack<T>s
};

// The element type of a SquaresDesc's data.
enum SquaresElement : int64_t { kSquaresF32, kSquaresF64, kSquaresBf16 };

struct SquaresDesc {
  const void* data;
  int64_t numel;
  int64_t first_chunk;
  int64_t element;  // a SquaresElement
};

int64_t chunks_of(int64_t numel) { return (numel + kOptimChunk - 1) / kOptimChunk; }

// The index of the last descriptor whose first chunk is <= chunk (descriptors sorted by
// first_chunk, every one non-empty, descs[0].first_chunk == 0).
template <class Desc>
__device__ int find_desc(const Desc* descs, int num_descs, int64_t chunk) {
  int lo = 0, hi = num_descs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (descs[mid].first_chunk <= chunk)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// The scalars of one step, in double.
struct AdamWStep {
  double lr, beta1, beta2, eps, bias1, bias2, one_minus_b1, one_minus_b2, grad_scale;
};

// One element: the double arithmetic of optim/adamw.cpp in the same order, every operation
// rounded separately (no fused multiply-add; adamw.cpp is compiled with -ffp-contract=off): the
// CPU loop's result bit for bit.
template <class T>
__device__ inline void adamw_update(T& param, T grad, T& exp_avg, T& exp_avg_sq, double decay,
                                    const AdamWStep& k) {
  const double g = __dmul_rn(value_cast<double>(grad), k.grad_scale);
  const double m = __dadd_rn(__dmul_rn(k.beta1, value_cast<double>(exp_avg)),
                             __dmul_rn(k.one_minus_b1, g));
  const double v = __dadd_rn(__dmul_rn(k.beta2, value_cast<double>(exp_avg_sq)),
                             __dmul_rn(__dmul_rn(k.one_minus_b2, g), g));
  exp_avg = value_cast<T>(m);
  exp_avg_sq = value_cast<T>(v);
  const double m_hat = __ddiv_rn(m, k.bias1), v_hat = __ddiv_rn(v, k.bias2);
  const double step = __ddiv_rn(__dmul_rn(k.lr, m_hat), __dadd_rn(__dsqrt_rn(v_hat), k.eps));
  param = value_cast<T>(__dadd_rn(__dmul_rn(decay, value_cast<double>(param)), -step));
}

// A chunk's elements a thread at a time, or, for packed tensors, a Pack<T> (16 bytes of each of
// the four tensors, loaded together) at a time and the chunk's tail by element: the update of
// one element is one long chain of dependent double operations, so the elements of a pack give
// each thread independent chains to interleave.
template <class T>
__global__ void adamw_kernel(const AdamWDesc<T>* __restrict__ descs, int num_descs,
                             int64_t num_chunks, AdamWStep k) {
  constexpr int P = Pack<T>::kSize;
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const AdamWDesc<T> d = descs[find_desc(descs, num_descs, c)];
    const int64_t begin = (c - d.first_chunk) * kOptimChunk;  // a multiple of P
    const int64_t end = begin + kOptimChunk < d.numel ? begin + kOptimChunk : d.numel;
    int64_t tail = begin;
    if (d.packed) {
      const int64_t packs = (end - begin) / P;
      for (int64_t q = threadIdx.x; q < packs; q += blockDim.x) {
        const int64_t j = begin + q * P;
        Pack<T> p = *reinterpret_cast<const Pack<T>*>(d.param + j);
        const Pack<T> g = *reinterpret_cast<const Pack<T>*>(d.grad + j);
        Pack<T> m = *reinterpret_cast<const Pack<T>*>(d.exp_avg + j);
        Pack<T> v = *reinterpret_cast<const Pack<T>*>(d.exp_avg_sq + j);
#pragma unroll
        for (int e = 0; e < P; ++e) adamw_update(p.v[e], g.v[e], m.v[e], v.v[e], d.decay, k);
        *reinterpret_cast<Pack<T>*>(d.param + j) = p;
        *reinterpret_cast<Pack<T>*>(d.exp_avg + j) = m;
        *reinterpret_cast<Pack<T>*>(d.exp_avg_sq + j) = v;
      }
      tail = begin + packs * P;
    }
    for (int64_t j = tail + threadIdx.x; j < end; j += blockDim.x)
      adamw_update(d.param[j], d.grad[j], d.exp_avg[j], d.exp_avg_sq[j], d.decay, k);
  }
}

// acc += the squares of this thread's elements of x[begin, end), each formed in double.
template <class S>
__device__ inline void add_squares(const void* data, int64_t begin, int64_t end, double& acc) {
  const S* x = static_cast<const S*>(data);
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const double xj = value_cast<double>(x[j]);
    acc += xj * xj;
  }
}

// Stage 1: partials[blockIdx.x] = sum of squares of this block's chunks.
__global__ void squares_partial_kernel(const SquaresDesc* __restrict__ descs, int num_descs,
                                       int64_t num_chunks, double* __restrict__ partials) {
  __shared__ double shm[32];
  double acc = 0.0;
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const SquaresDesc d = descs[find_desc(descs, num_descs, c)];
    const int64_t begin = (c - d.first_chunk) * kOptimChunk;
    const int64_t end = begin + kOptimChunk < d.numel ? begin + kOptimChunk : d.numel;
    if (d.element == kSquaresF64)
      add_squares<double>(d.data, begin, end, acc);
    else if (d.element == kSquaresBf16)
      add_squares<bf16_dev>(d.data, begin, end, acc);
    else
      add_squares<float>(d.data, begin, end, acc);
  }
  acc = block_reduce(acc, SumOp{}, 0.0, shm);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Stage 2 (one block): *total = sum of the n partials.
__global__ void squares_total_kernel(const double* __restrict__ partials, int64_t n,
                                     double* __restrict__ total) {
  __shared__ double shm[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += partials[i];
  acc = block_reduce(acc, SumOp{}, 0.0, shm);
  if (threadIdx.x == 0) *total = acc;
}

// A device copy of `descs` (a trivially copyable array), kept alive by the returned tensor; the
// stream-ordered allocator frees it only after the kernels queued before the free have run.
template <class Desc>
Tensor upload(const std::vector<Desc>& descs) {
  const int64_t bytes = static_cast<int64_t>(descs.size() * sizeof(Desc));
  Tensor buffer = cuda_empty({(bytes + 7) / 8}, DType::i64);
  // From pageable memory: returns once the source has been staged, so `descs` may go away.
  CUDA_CHECK(cudaMemcpyAsync(buffer.raw_data(), descs.data(), static_cast<size_t>(bytes),
                             cudaMemcpyHostToDevice, stream()));
  return buffer;
}

void require_optim_tensor(const Tensor& t, DType dtype, int64_t numel, const char* op,
                          const char* name) {
  require_cuda(t, op, name);
  if (t.dtype() != dtype)
    throw Error(op, std::string(name) + " of dtype " + dtype_name(dtype), dtype_name(t.dtype()),
                "all tensors of one update share the parameters' dtype");
  if (!t.is_contiguous()) throw Error(op, std::string(name) + " contiguous", "a strided view");
  if (t.numel() != numel)
    throw Error(op, std::string(name) + " with " + std::to_string(numel) + " elements",
                std::to_string(t.numel()));
}

unsigned grid_for_chunks(int64_t num_chunks) {
  return static_cast<unsigned>(std::min(num_chunks, kMaxBlocks));
}

}  // namespace

void adamw_step(const std::vector<AdamWSlot>& slots, const AdamWScalars& s) {
  if (slots.empty()) return;
  const DType dtype = slots.front().param.dtype();
  visit_cuda_storage(dtype, "adamw", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    std::vector<AdamWDesc<T>> descs;
    int64_t num_chunks = 0;
    for (const AdamWSlot& slot : slots) {
      const int64_t n = slot.param.numel();
      require_optim_tensor(slot.param, dtype, n, "adamw", "parameter");
      require_optim_tensor(slot.grad, dtype, n, "adamw", "gradient");
      require_optim_tensor(slot.exp_avg, dtype, n, "adamw", "exp_avg");
      require_optim_tensor(slot.exp_avg_sq, dtype, n, "adamw", "exp_avg_sq");
      if (n == 0) continue;
      // Tensors are handles: these copies share the slots' storage and give writable pointers.
      Tensor param = slot.param, exp_avg = slot.exp_avg, exp_avg_sq = slot.exp_avg_sq;
      descs.push_back({param.data<T>(), slot.grad.data<T>(), exp_avg.data<T>(),
                       exp_avg_sq.data<T>(), n, num_chunks,
                       slot.decay ? 1.0 - s.lr * s.weight_decay : 1.0,
                       packable({&param, &slot.grad, &exp_avg, &exp_avg_sq}) ? 1 : 0});
      num_chunks += chunks_of(n);
    }
    if (descs.empty()) return;
    HLA_CHECK(descs.size() < (size_t(1) << 31), "adamw: too many tensors for one launch");
    const Tensor device_descs = upload(descs);
    // 1 - beta rounded as on the CPU (one double subtraction)
    const AdamWStep k{s.lr,    s.beta1,       s.beta2,       s.eps,       s.bias1,
                      s.bias2, 1.0 - s.beta1, 1.0 - s.beta2, s.grad_scale};
    adamw_kernel<T><<<grid_for_chunks(num_chunks), kThreads, 0, stream()>>>(
        static_cast<const AdamWDesc<T>*>(device_descs.raw_data()), static_cast<int>(descs.size()),
        num_chunks, k);
    CUDA_CHECK(cudaGetLastError());
  });
}

double sum_of_squares(const std::vector<Tensor>& tensors) {
  std::vector<SquaresDesc> descs;
  int64_t num_chunks = 0;
  for (const Tensor& t : tensors) {
    require_cuda(t, "sum_of_squares", "tensor");
    if (!t.is_contiguous()) throw Error("sum_of_squares", "contiguous tensors", "a strided view");
    const SquaresElement element = visit_cuda_storage(t.dtype(), "sum_of_squares", [](auto tag_) {
      using S = typename decltype(tag_)::type;
      return std::is_same_v<S, double>  ? kSquaresF64
             : std::is_same_v<S, float> ? kSquaresF32
                                        : kSquaresBf16;
    });
    if (t.numel() == 0) continue;
    descs.push_back({t.raw_data(), t.numel(), num_chunks, element});
    num_chunks += chunks_of(t.numel());
  }
  if (descs.empty()) return 0.0;
  HLA_CHECK(descs.size() < (size_t(1) << 31), "sum_of_squares: too many tensors for one launch");
  const Tensor device_descs = upload(descs);
  const unsigned blocks = grid_for_chunks(num_chunks);
  Tensor partials = cuda_empty({int64_t(blocks) + 1}, DType::f64);  // [blocks partials, total]
  double* p = partials.data<double>();
  squares_partial_kernel<<<blocks, kThreads, 0, stream()>>>(
      static_cast<const SquaresDesc*>(device_descs.raw_data()), static_cast<int>(descs.size()),
      num_chunks, p);
  CUDA_CHECK(cudaGetLastError());
  squares_total_kernel<<<1, kThreads, 0, stream()>>>(p, blocks, p + blocks);
  CUDA_CHECK(cudaGetLastError());
  double total = 0.0;
  CUDA_CHECK(cudaMemcpyAsync(&total, p + blocks, sizeof(double), cudaMemcpyDeviceToHost, stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  return total;
}

}  // namespace hla::cuda

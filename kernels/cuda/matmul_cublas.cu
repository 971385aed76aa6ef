// Matrix products on CUDA through cuBLAS: a [..., M, K] @ b [..., K, N] -> [..., M, N] (fresh,
// contiguous), batch dims broadcast. fp32 math by default; cuda::set_tf32(true) switches f32
// products to TF32 tensor cores (fp32 accumulation, ~1e-3 relative error). f64 uses DGEMM math.
// bf16 x bf16 -> bf16 runs on bf16 tensor cores with fp32 accumulation (CUBLAS_COMPUTE_32F,
// float alpha/beta); only the output is rounded to bf16, once per element.
//
// cuBLAS is column-major. The row-major <-> column-major swap lives in matmul_cublas() below and
// nowhere else: a row-major X [r, c] with leading dimension ld is the column-major X^T, so
//   C [M, N] = A B   is computed as   C^T [N, M] = B^T A^T   (cuBLAS m = N, n = M, k = K).
// Each operand's last two dims are read in place when row-major (stride[-1] == 1) or transposed
// (stride[-2] == 1); its batch dims must collapse to one stride (0 = broadcast), else the
// operand is copied to a contiguous tensor first.
#include <climits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"

namespace hla::cuda {

namespace {

// ---- launchers (no custom kernels: cuBLAS does the work)

struct Operand {
  Tensor t;               // expanded to [batch..., rows, cols]
  bool transposed = false;  // last two dims stored column-major
  int64_t ld = 0;           // leading dimension (outer stride of the stored matrix)
  int64_t batch_stride = 0;
};

// Collapses the batch dims of t (all but the last two) into one stride; false if impossible.
bool collapse_batch(const Tensor& t, int64_t* stride) {
  const int64_t nb = t.dim() - 2;
  int64_t prev = -1;  // index of the inner-most non-trivial batch dim seen so far
  *stride = 0;
  for (int64_t d = nb - 1; d >= 0; --d) {
    if (t.shape()[d] == 1) continue;
    if (prev < 0) {
      *stride = t.strides()[d];
    } else if (t.strides()[d] != t.strides()[prev] * t.shape()[prev]) {
      return false;
    }
    prev = d;
  }
  return true;
}

bool matrix_layout(const Tensor& x, bool* transposed, int64_t* ld) {
  const int64_t r = x.dim(), rows = x.shape()[r - 2], cols = x.shape()[r - 1];
  const int64_t s0 = x.strides()[r - 2], s1 = x.strides()[r - 1];
  if ((s1 == 1 || cols == 1) && s0 >= std::max<int64_t>(cols, 1)) {
    *transposed = false;
    *ld = s0;
    return true;
  }
  if ((s0 == 1 || rows == 1) && s1 >= std::max<int64_t>(rows, 1)) {
    *transposed = true;
    *ld = s1;
    return true;
  }
  return false;
}

Operand prepare(const Tensor& x, const Shape& expanded) {
  Operand o;
  o.t = x.expand(expanded);
  if (!matrix_layout(o.t, &o.transposed, &o.ld) || !collapse_batch(o.t, &o.batch_stride)) {
    o.t = contiguous(o.t);
    const int64_t r = o.t.dim();
    o.transposed = false;
    o.ld = std::max<int64_t>(o.t.shape()[r - 1], 1);
    collapse_batch(o.t, &o.batch_stride);
  }
  return o;
}

// The one row-major wrapper around cublasGemmStridedBatchedEx: C[b] = A[b] @ B[b] (or
// C[b] += A[b] @ B[b] with `accumulate`), C row-major contiguous [batch, M, N]. A and B share a
// dtype; C has theirs, or f32 for bf16 operands.
void matmul_cublas(const Operand& a, const Operand& b, Tensor& c, int64_t M, int64_t K, int64_t N,
                   int64_t batch, bool accumulate = false) {
  for (int64_t v : {M, K, N, batch, a.ld, b.ld})
    if (v > INT_MAX) throw Error("matmul", "dimensions below 2^31 for cuBLAS", std::to_string(v));
  Context& ctx = Context::get();
  auto type_of = [](DType d) {
    return d == DType::f64 ? CUDA_R_64F : (d == DType::bf16 ? CUDA_R_16BF : CUDA_R_32F);
  };
  const bool f64 = c.dtype() == DType::f64, bf16_in = a.t.dtype() == DType::bf16;
  const cublasComputeType_t compute =
      f64 ? CUBLAS_COMPUTE_64F
          : (ctx.tf32 && !bf16_in ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
  const double alpha_d = 1.0, beta_d = accumulate ? 1.0 : 0.0;
  const float alpha_f = 1.0f, beta_f = accumulate ? 1.0f : 0.0f;
  const void* alpha = f64 ? static_cast<const void*>(&alpha_d) : &alpha_f;
  const void* beta = f64 ? static_cast<const void*>(&beta_d) : &beta_f;
  // Column-major: C^T [N, M] = op(B) [N, K] * op(A) [K, M]. A row-major operand already is the
  // transpose cuBLAS wants (OP_N); a transposed (column-major) view needs OP_T.
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      ctx.cublas(), b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N,
      a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N, int(N), int(M), int(K), alpha, b.t.raw_data(),
      type_of(b.t.dtype()), int(b.ld), b.batch_stride, a.t.raw_data(), type_of(a.t.dtype()),
      int(a.ld), a.batch_stride, beta, c.raw_data(), type_of(c.dtype()), int(N), M * N,
      int(batch), compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in, DType out) {
  require_cuda(a_in, "matmul", "a");
  require_cuda(b_in, "matmul", "b");
  check_same_dtype(a_in, b_in, "matmul");
  visit_cuda_storage(a_in.dtype(), "matmul", [&](auto) {});
  if (out != a_in.dtype() && !(a_in.dtype() == DType::bf16 && out == DType::f32))
    throw Error("matmul", "a product in the operands' dtype, or in f32 for bf16 operands",
                std::string(dtype_name(a_in.dtype())) + " operands into " + dtype_name(out));
  if (a_in.dim() < 2 || b_in.dim() < 2)
    throw Error("matmul", "operands of rank >= 2 ([..., M, K] @ [..., K, N])",
                to_string(a_in.shape()) + " @ " + to_string(b_in.shape()),
                "unsqueeze vectors to [1, K] or [K, 1]");
  const int64_t M = a_in.size(-2), K = a_in.size(-1), N = b_in.size(-1);
  if (b_in.size(-2) != K)
    throw Error("matmul", "inner dimensions to agree ([..., M, K] @ [..., K, N])",
                to_string(a_in.shape()) + " @ " + to_string(b_in.shape()));
  const Shape batch_a(a_in.shape().begin(), a_in.shape().end() - 2);
  const Shape batch_b(b_in.shape().begin(), b_in.shape().end() - 2);
  const Shape batch = broadcast_shapes(batch_a, batch_b, "matmul");
  Shape ea = batch, eb = batch, out_shape = batch;
  ea.insert(ea.end(), {M, K});
  eb.insert(eb.end(), {K, N});
  out_shape.insert(out_shape.end(), {M, N});
  const int64_t nbatch = hla::numel(batch);
  if (M == 0 || N == 0 || nbatch == 0) return cuda_empty(out_shape, out);
  if (K == 0) return cuda_zeros(out_shape, out);
  const Operand a = prepare(a_in, ea), b = prepare(b_in, eb);
  Tensor c = cuda_empty(out_shape, out);
  matmul_cublas(a, b, c, M, K, N, nbatch);
  return c;
}

void matmul_acc(Tensor& c, const Tensor& a_in, const Tensor& b_in) {
  const char* op = "matmul_acc";
  require_cuda(c, op, "c");
  require_cuda(a_in, op, "a");
  require_cuda(b_in, op, "b");
  check_same_dtype(a_in, b_in, op);
  ops::check_matmul_acc(c, a_in, b_in, op);
  const int64_t M = a_in.size(0), K = a_in.size(1), N = b_in.size(1);
  const DType in = a_in.dtype(), out = c.dtype();
  if (!(in == out) && !(in == DType::bf16 && out == DType::f32))
    throw Error(op, "a, b of c's dtype, or bf16 with an f32 c",
                std::string(dtype_name(in)) + " into " + dtype_name(out));
  if (M == 0 || N == 0 || K == 0) return;
  const Operand a = prepare(a_in, a_in.shape()), b = prepare(b_in, b_in.shape());
  matmul_cublas(a, b, c, M, K, N, 1, true);
}

}  // namespace hla::cuda

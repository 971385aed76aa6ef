// Matrix products on CPU through Eigen's GEMM (multithreaded with OpenMP).
//   a [..., M, K] @ b [..., K, N] -> [..., M, N]; batch dimensions broadcast.
// Each operand's last two dims are mapped in place when they are row-major (stride[-1] == 1) or
// column-major (stride[-2] == 1, i.e. a transposed view), so backward's a @ b^T costs no copy.
#include "kernels/cpu/eigen.h"
#include "kernels/ops.h"
#ifdef HLA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif
#include "tensor/dtype_dispatch.h"
#include "tensor/strided.h"

namespace hla::ops {

namespace {

template <class T, int Order>
using MatMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>, 0,
                          Eigen::OuterStride<>>;
using RowOut = Eigen::OuterStride<>;

struct MatLayout {
  bool col_major = false;  // last two dims stored transposed
  int64_t ld = 0;          // leading dimension (outer stride)
};

// Returns the operand, made contiguous if its last two dims are neither row- nor column-major.
Tensor as_matrix_operand(const Tensor& x, MatLayout* layout) {
  const int64_t r = x.dim(), rows = x.shape()[r - 2], cols = x.shape()[r - 1];
  const int64_t s0 = x.strides()[r - 2], s1 = x.strides()[r - 1];
  if ((s1 == 1 || cols == 1) && s0 >= cols && s0 > 0) {
    *layout = {false, s0};
    return x;
  }
  if ((s0 == 1 || rows == 1) && s1 >= rows && s1 > 0) {
    *layout = {true, s1};
    return x;
  }
  const Tensor c = x.contiguous();
  *layout = {false, std::max<int64_t>(cols, 1)};
  return c;
}

// c = a b, or c += a b with Acc.
template <class T, int OA, int OB, bool Acc>
void gemm(const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t M, int64_t K,
          int64_t N) {
  MatMap<T, OA> A(a, M, K, Eigen::OuterStride<>(lda));
  MatMap<T, OB> B(b, K, N, Eigen::OuterStride<>(ldb));
  Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> C(c, M, N);
  if constexpr (Acc)
    C.noalias() += A * B;
  else
    C.noalias() = A * B;
}

template <class T, bool Acc = false>
void gemm_any(const T* a, MatLayout la, const T* b, MatLayout lb, T* c, int64_t M, int64_t K,
              int64_t N) {
  constexpr int R = Eigen::RowMajor, Cm = Eigen::ColMajor;
  if (!la.col_major && !lb.col_major) gemm<T, R, R, Acc>(a, la.ld, b, lb.ld, c, M, K, N);
  else if (!la.col_major && lb.col_major) gemm<T, R, Cm, Acc>(a, la.ld, b, lb.ld, c, M, K, N);
  else if (la.col_major && !lb.col_major) gemm<T, Cm, R, Acc>(a, la.ld, b, lb.ld, c, M, K, N);
  else gemm<T, Cm, Cm, Acc>(a, la.ld, b, lb.ld, c, M, K, N);
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) { return matmul(a_in, b_in, a_in.dtype()); }

Tensor matmul(const Tensor& a_in, const Tensor& b_in, DType out) {
#ifdef HLA_WITH_CUDA
  if (a_in.device() == Device::CUDA || b_in.device() == Device::CUDA)
    return cuda::matmul(a_in, b_in, out);
#endif
  if (out != a_in.dtype())  // f32 (f64) operands: the product has their dtype
    throw Error("matmul", "a product in the operands' dtype on CPU",
                std::string(dtype_name(a_in.dtype())) + " operands into " + dtype_name(out),
                "bf16 products (summed into f32) run on CUDA");
  require_cpu(a_in, "matmul");
  require_cpu(b_in, "matmul");
  check_same_dtype(a_in, b_in, "matmul");
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
  Shape ea_shape = batch, eb_shape = batch, out_shape = batch;
  ea_shape.insert(ea_shape.end(), {M, K});
  eb_shape.insert(eb_shape.end(), {K, N});
  out_shape.insert(out_shape.end(), {M, N});

  MatLayout la, lb;
  const Tensor a = as_matrix_operand(a_in, &la).expand(ea_shape);
  const Tensor b = as_matrix_operand(b_in, &lb).expand(eb_shape);
  return visit_floating(a.dtype(), "matmul", [&]<class T>() {
    Tensor out = Tensor::zeros(out_shape, a.dtype());
    if (M == 0 || N == 0 || K == 0) return out;
    const Shape sa(a.strides().begin(), a.strides().end() - 2);
    const Shape sb(b.strides().begin(), b.strides().end() - 2);
    const Shape so(out.strides().begin(), out.strides().end() - 2);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    // One GEMM per batch element; a zero-rank batch is one call.
    Shape batch_1 = batch, sa_1 = sa, sb_1 = sb, so_1 = so;
    batch_1.push_back(1);
    sa_1.push_back(0);
    sb_1.push_back(0);
    so_1.push_back(0);
    for_each_row<3>(batch_1, {&sa_1, &sb_1, &so_1}, [&](const auto& off, int64_t, const auto&) {
      gemm_any<T>(pa + off[0], la, pb + off[1], lb, po + off[2], M, K, N);
    });
    return out;
  });
}

void matmul_acc(Tensor& c, const Tensor& a_in, const Tensor& b_in) {
#ifdef HLA_WITH_CUDA
  if (c.device() == Device::CUDA || a_in.device() == Device::CUDA || b_in.device() == Device::CUDA)
    return cuda::matmul_acc(c, a_in, b_in);
#endif
  const char* op = "matmul_acc";
  require_cpu(c, op);
  require_cpu(a_in, op);
  require_cpu(b_in, op);
  check_same_dtype(a_in, b_in, op);
  check_same_dtype(c, a_in, op);
  check_matmul_acc(c, a_in, b_in, op);
  const int64_t M = a_in.size(0), K = a_in.size(1), N = b_in.size(1);
  MatLayout la, lb;
  const Tensor a = as_matrix_operand(a_in, &la), b = as_matrix_operand(b_in, &lb);
  visit_floating(c.dtype(), op, [&]<class T>() {
    if (M == 0 || N == 0 || K == 0) return;
    gemm_any<T, true>(a.data<T>(), la, b.data<T>(), lb, c.data<T>(), M, K, N);
  });
}

}  // namespace hla::ops

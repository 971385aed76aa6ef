// defines: hgrn_chunk_forward, hgrn_chunk_backward (float, double) (kernels/recurrence.h): HGRN's
// elementwise recurrence as a chunked parallel scan (spec 1.4), kChunk steps per chunk. Unlike
// fla's chunk_hgrn, the backward takes dhT and returns dh0 (spec 1.5).
//
// Shapes (row-major):  x, g, o [B,T,D]   h0, hT [B,D]
//   h_t = exp(g_t) * h_{t-1} + x_t        o_t = h_t
//
// Forward, with chunk-local cumulative log decays Lambda_r = g_0 + ... + g_r (row r of a chunk):
//   1. local scans, all chunks in parallel, from a zero state:   hl_r = exp(g_r) hl_{r-1} + x_r
//   2. carry pass, chunk after chunk:   h_in(c+1) = hl_last(c) + exp(Lambda_last(c)) h_in(c)
//   3. fix-up, all chunks in parallel:  h_r = hl_r + exp(Lambda_r) h_in(c)
// Backward: the same three steps run backwards in time on dh = dL/dh_t, whose recurrence is
//   dh_t = do_t + exp(g_{t+1}) dh_{t+1}        (dh_T includes dhT)
//   1. local reverse scans:   dl_r = do_r + exp(g_{r+1}) dl_{r+1}, from zero after the chunk
//   2. carry pass, chunk before chunk, of  d_out(c) = dL/dh at the end of chunk c-1:
//        d_out(C) = dhT,   d_out(c) = exp(g_first(c)) dl_first(c) + exp(Lambda_last(c)) d_out(c+1)
//      so that dh0 = d_out(0)
//   3. fix-up:  dh_r = dl_r + exp(Lambda_last - Lambda_r) d_out(c+1);  dx_r = dh_r;
//               dg_r = exp(g_r) h_{r-1} dh_r
// The h_t needed by dg come from a forward scan into dg itself; within a chunk, step 3 walks the
// rows in reverse and reads h_{r-1} just before row r-1 is overwritten (h_in(c) for r = 0).
// Gradients are overwritten, never accumulated.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/eigen.h"
#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {

template <class S>
using Arr = Eigen::Array<S, Eigen::Dynamic, 1>;
template <class S>
using Vec = Eigen::Map<Arr<S>>;
template <class S>
using ConstVec = Eigen::Map<const Arr<S>>;

// Index arithmetic of the chunked scan. Per-chunk buffers are [B, n_chunks (+1), D].
struct Chunks {
  int64_t B, T, D, n;  // n: number of chunks
  int64_t first(int64_t c) const { return c * kChunk; }
  int64_t size(int64_t c) const { return std::min(kChunk, T - c * kChunk); }
  int64_t at(int64_t b, int64_t t) const { return (b * T + t) * D; }
  int64_t per_chunk(int64_t b, int64_t c, int64_t count) const { return (b * count + c) * D; }
};

template <class S>
Chunks chunks_of(const HgrnArgs<S>& a) {
  HLA_CHECK(a.d.B > 0 && a.d.T > 0 && a.d.D > 0,
            "B,T,D = " << a.d.B << "," << a.d.T << "," << a.d.D);
  HLA_CHECK(a.x && a.g, "x and g are required");
  return {a.d.B, a.d.T, a.d.D, (a.d.T + kChunk - 1) / kChunk};
}

// The forward scan: h_t into h [B,T,D], and h_in [B, n+1, D], the state entering each chunk
// (h_in(n) = h_T).
template <class S>
void scan_forward(const HgrnArgs<S>& a, const Chunks& ch, S* h, std::vector<S>& h_in) {
  const int64_t D = ch.D;
  std::vector<S> lambda_last(ch.B * ch.n * D);  // Lambda_last(c) [B, n, D]
  h_in.assign(ch.B * (ch.n + 1) * D, S(0));

#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < ch.B * ch.n; ++bc) {  // 1. local scans
    const int64_t b = bc / ch.n, c = bc % ch.n;
    Arr<S> hl = Arr<S>::Zero(D), lambda = Arr<S>::Zero(D);
    for (int64_t t = ch.first(c); t < ch.first(c) + ch.size(c); ++t) {
      const ConstVec<S> g(a.g + ch.at(b, t), D), x(a.x + ch.at(b, t), D);
      hl = g.exp() * hl + x;
      lambda += g;
      Vec<S>(h + ch.at(b, t), D) = hl;
    }
    Vec<S>(lambda_last.data() + ch.per_chunk(b, c, ch.n), D) = lambda;
  }

#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < ch.B; ++b) {  // 2. carry pass
    if (a.h0) Vec<S>(h_in.data() + ch.per_chunk(b, 0, ch.n + 1), D) = ConstVec<S>(a.h0 + b * D, D);
    for (int64_t c = 0; c < ch.n; ++c) {
      const int64_t last = ch.first(c) + ch.size(c) - 1;
      const ConstVec<S> hl_last(h + ch.at(b, last), D);
      const ConstVec<S> lambda(lambda_last.data() + ch.per_chunk(b, c, ch.n), D);
      const ConstVec<S> carry(h_in.data() + ch.per_chunk(b, c, ch.n + 1), D);
      Vec<S>(h_in.data() + ch.per_chunk(b, c + 1, ch.n + 1), D) = hl_last + lambda.exp() * carry;
    }
  }

#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < ch.B * ch.n; ++bc) {  // 3. fix-up
    const int64_t b = bc / ch.n, c = bc % ch.n;
    const ConstVec<S> carry(h_in.data() + ch.per_chunk(b, c, ch.n + 1), D);
    Arr<S> lambda = Arr<S>::Zero(D);
    for (int64_t t = ch.first(c); t < ch.first(c) + ch.size(c); ++t) {
      lambda += ConstVec<S>(a.g + ch.at(b, t), D);
      Vec<S>(h + ch.at(b, t), D) += lambda.exp() * carry;
    }
  }
}

}  // namespace

template <class S>
void hgrn_chunk_forward(const HgrnArgs<S>& a, const HgrnOut<S>& out) {
  const Chunks ch = chunks_of(a);
  HLA_CHECK(out.o, "o is required");
  std::vector<S> h_in;
  scan_forward(a, ch, out.o, h_in);
  if (out.hT)
    for (int64_t b = 0; b < ch.B; ++b)
      Vec<S>(out.hT + b * ch.D, ch.D) =
          ConstVec<S>(h_in.data() + ch.per_chunk(b, ch.n, ch.n + 1), ch.D);
}

template <class S>
void hgrn_chunk_backward(const HgrnArgs<S>& a, const HgrnGrad<S>& grad) {
  const Chunks ch = chunks_of(a);
  HLA_CHECK(grad.dout && grad.dx && grad.dg, "dout, dx and dg are required");
  const int64_t D = ch.D;
  std::vector<S> h_in;
  scan_forward(a, ch, grad.dg, h_in);  // dg holds h_t until row t is overwritten in step 3
  std::vector<S> lambda_last(ch.B * ch.n * D);
  std::vector<S> d_out(ch.B * (ch.n + 1) * D, S(0));  // d_out(c) [B, n+1, D]

#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < ch.B * ch.n; ++bc) {  // 1. local reverse scans into dx
    const int64_t b = bc / ch.n, c = bc % ch.n;
    Arr<S> dl = Arr<S>::Zero(D), lambda = Arr<S>::Zero(D), f_next = Arr<S>::Zero(D);
    for (int64_t t = ch.first(c) + ch.size(c) - 1; t >= ch.first(c); --t) {
      const ConstVec<S> g(a.g + ch.at(b, t), D);
      dl = ConstVec<S>(grad.dout + ch.at(b, t), D) + f_next * dl;
      Vec<S>(grad.dx + ch.at(b, t), D) = dl;
      f_next = g.exp();
      lambda += g;
    }
    Vec<S>(lambda_last.data() + ch.per_chunk(b, c, ch.n), D) = lambda;
  }

#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < ch.B; ++b) {  // 2. carry pass, backwards in time
    if (grad.dhT)
      Vec<S>(d_out.data() + ch.per_chunk(b, ch.n, ch.n + 1), D) = ConstVec<S>(grad.dhT + b * D, D);
    for (int64_t c = ch.n - 1; c >= 0; --c) {
      const int64_t first = ch.first(c);
      const ConstVec<S> g_first(a.g + ch.at(b, first), D), dl_first(grad.dx + ch.at(b, first), D);
      const ConstVec<S> lambda(lambda_last.data() + ch.per_chunk(b, c, ch.n), D);
      const ConstVec<S> after(d_out.data() + ch.per_chunk(b, c + 1, ch.n + 1), D);
      Vec<S>(d_out.data() + ch.per_chunk(b, c, ch.n + 1), D) =
          g_first.exp() * dl_first + lambda.exp() * after;
    }
  }

#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < ch.B * ch.n; ++bc) {  // 3. fix-up: dx, dg
    const int64_t b = bc / ch.n, c = bc % ch.n;
    const ConstVec<S> after(d_out.data() + ch.per_chunk(b, c + 1, ch.n + 1), D);
    const S* h_before = h_in.data() + ch.per_chunk(b, c, ch.n + 1);
    Arr<S> to_end = Arr<S>::Zero(D);  // Lambda_last - Lambda_r
    for (int64_t t = ch.first(c) + ch.size(c) - 1; t >= ch.first(c); --t) {
      const ConstVec<S> g(a.g + ch.at(b, t), D);
      Vec<S> dh(grad.dx + ch.at(b, t), D);
      dh += to_end.exp() * after;
      const ConstVec<S> h_prev(t > ch.first(c) ? grad.dg + ch.at(b, t - 1) : h_before, D);
      Vec<S>(grad.dg + ch.at(b, t), D) = g.exp() * h_prev * dh;
      to_end += g;
    }
  }

  if (grad.dh0)
    for (int64_t b = 0; b < ch.B; ++b)
      Vec<S>(grad.dh0 + b * D, D) = ConstVec<S>(d_out.data() + ch.per_chunk(b, 0, ch.n + 1), D);
}

template void hgrn_chunk_forward<float>(const HgrnArgs<float>&, const HgrnOut<float>&);
template void hgrn_chunk_forward<double>(const HgrnArgs<double>&, const HgrnOut<double>&);
template void hgrn_chunk_backward<float>(const HgrnArgs<float>&, const HgrnGrad<float>&);
template void hgrn_chunk_backward<double>(const HgrnArgs<double>&, const HgrnGrad<double>&);

}  // namespace hla::kernels

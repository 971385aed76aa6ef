// defines: hgrn_recurrent_forward, hgrn_recurrent_backward (float, double) (kernels/recurrence.h):
// the step-by-step Eigen tier of HGRN's elementwise recurrence, what decoding uses. Same maths as
// kernels/reference/hgrn.cpp; one OpenMP task per (batch row, tile of channels).
//
// Shapes (row-major):  x, g, o [B,T,D]   h0, hT [B,D]
//   h_t = exp(g_t) * h_{t-1} + x_t        o_t = h_t
// Backward: a forward sweep writes h_t into dg (a [B,T,D] buffer the backward must fill anyway);
// the reverse sweep then reads h_{t-1} from it just before overwriting step t with dg_t:
//   dh += do_t;  dx_t = dh;  dg_t = exp(g_t) h_{t-1} dh;  dh <- exp(g_t) dh;  finally dh0 = dh.
// Gradients are overwritten, never accumulated.
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/eigen.h"
#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {

template <class S>
using Arr = Eigen::Array<S, Eigen::Dynamic, 1>;

// The channels [c0, c0+w) of batch row b.
struct Tile {
  int64_t b, c0, w;
};

// Channel tiles as wide as possible (every step then reads long contiguous rows, which matters
// more than anything else in this memory-bound scan) while every OpenMP thread still gets one.
struct Tiles {
  int64_t B, T, D, width, per_row;
  Tile operator[](int64_t i) const {
    const int64_t c0 = (i % per_row) * width;
    return {i / per_row, c0, std::min(width, D - c0)};
  }
  int64_t count() const { return B * per_row; }
  int64_t at(const Tile& tile, int64_t t) const { return (tile.b * T + t) * D + tile.c0; }
  int64_t state(const Tile& tile) const { return tile.b * D + tile.c0; }
};

template <class S>
Tiles tiles_of(const HgrnArgs<S>& a) {
  const HgrnDims& d = a.d;
  HLA_CHECK(d.B > 0 && d.T > 0 && d.D > 0, "B,T,D = " << d.B << "," << d.T << "," << d.D);
  HLA_CHECK(a.x && a.g, "x and g are required");
  constexpr int64_t kMinWidth = 64;  // narrower tiles cost more in memory traffic than they gain
  const int64_t threads = omp_get_max_threads();
  const int64_t per_row =
      std::clamp<int64_t>((threads + d.B - 1) / d.B, 1, (d.D + kMinWidth - 1) / kMinWidth);
  const int64_t width = (d.D + per_row - 1) / per_row;
  return {d.B, d.T, d.D, width, (d.D + width - 1) / width};
}

template <class S>
Arr<S> load_or_zero(const S* p, int64_t n) {
  if (!p) return Arr<S>::Zero(n);
  return Eigen::Map<const Arr<S>>(p, n);
}

// h_t for t = 0..T-1 of one tile into out (a [B,T,D] buffer); returns h_T.
template <class S>
Arr<S> scan(const HgrnArgs<S>& a, const Tiles& tiles, const Tile& tile, S* out) {
  Arr<S> h = load_or_zero(a.h0 ? a.h0 + tiles.state(tile) : nullptr, tile.w);
  for (int64_t t = 0; t < tiles.T; ++t) {
    const int64_t n = tiles.at(tile, t);
    const Eigen::Map<const Arr<S>> g(a.g + n, tile.w), x(a.x + n, tile.w);
    h = g.exp() * h + x;
    Eigen::Map<Arr<S>>(out + n, tile.w) = h;
  }
  return h;
}

}  // namespace

template <class S>
void hgrn_recurrent_forward(const HgrnArgs<S>& a, const HgrnOut<S>& out) {
  const Tiles tiles = tiles_of(a);
  HLA_CHECK(out.o, "o is required");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < tiles.count(); ++i) {
    const Tile tile = tiles[i];
    const Arr<S> hT = scan(a, tiles, tile, out.o);
    if (out.hT) Eigen::Map<Arr<S>>(out.hT + tiles.state(tile), tile.w) = hT;
  }
}

template <class S>
void hgrn_recurrent_backward(const HgrnArgs<S>& a, const HgrnGrad<S>& grad) {
  const Tiles tiles = tiles_of(a);
  HLA_CHECK(grad.dout && grad.dx && grad.dg, "dout, dx and dg are required");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < tiles.count(); ++i) {
    const Tile tile = tiles[i];
    scan(a, tiles, tile, grad.dg);  // dg holds h_t until step t is overwritten below
    const Arr<S> h0 = load_or_zero(a.h0 ? a.h0 + tiles.state(tile) : nullptr, tile.w);
    Arr<S> dh = load_or_zero(grad.dhT ? grad.dhT + tiles.state(tile) : nullptr, tile.w);
    for (int64_t t = tiles.T - 1; t >= 0; --t) {
      const int64_t n = tiles.at(tile, t);
      const Arr<S> f = Eigen::Map<const Arr<S>>(a.g + n, tile.w).exp();
      dh += Eigen::Map<const Arr<S>>(grad.dout + n, tile.w);
      Eigen::Map<Arr<S>>(grad.dx + n, tile.w) = dh;
      const S* h_prev = t > 0 ? grad.dg + tiles.at(tile, t - 1) : h0.data();
      Eigen::Map<Arr<S>>(grad.dg + n, tile.w) = f * Eigen::Map<const Arr<S>>(h_prev, tile.w) * dh;
      dh *= f;
    }
    if (grad.dh0) Eigen::Map<Arr<S>>(grad.dh0 + tiles.state(tile), tile.w) = dh;
  }
}

template void hgrn_recurrent_forward<float>(const HgrnArgs<float>&, const HgrnOut<float>&);
template void hgrn_recurrent_forward<double>(const HgrnArgs<double>&, const HgrnOut<double>&);
template void hgrn_recurrent_backward<float>(const HgrnArgs<float>&, const HgrnGrad<float>&);
template void hgrn_recurrent_backward<double>(const HgrnArgs<double>&, const HgrnGrad<double>&);

}  // namespace hla::kernels

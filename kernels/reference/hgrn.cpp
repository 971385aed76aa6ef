// defines: hgrn_reference_forward, hgrn_reference_backward (kernels/recurrence.h)
//
// The executable specification of HGRN's elementwise recurrence (spec/recurrences.md 1.3 step 5
// and 1.5): a literal loop over t in double, one channel c of one batch row b at a time.
//
// Shapes (row-major):  x, g, o [B,T,D]   h0, hT [B,D]
// x is the already-gated input u_t = silu(i_t) * (1 - f_t) of the layer; g = log f_t <= 0.
//
// Forward, h_0 = h0 (or 0):
//   h_t = exp(g_t) h_{t-1} + x_t        o_t = h_t        hT = h_T
//
// Backward, one reverse-time loop carrying dh = dL/dh_t, starting from dh_T = dhT (or 0):
//   dh   += do_t                        (o_t reads h_t)
//   dx_t  = dh
//   dg_t  = exp(g_t) h_{t-1} dh         (d/dg of exp(g) h_{t-1})
//   dh_{t-1} = exp(g_t) dh              and finally dh0 = dh_0.
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/recurrence.h"
#include "tensor/error.h"

namespace hla::kernels {
namespace {

void check_args(const HgrnArgs<double>& a) {
  HLA_CHECK(a.d.B > 0 && a.d.T > 0 && a.d.D > 0,
            "B,T,D = " << a.d.B << "," << a.d.T << "," << a.d.D);
  HLA_CHECK(a.x && a.g, "x and g are required");
}

}  // namespace

void hgrn_reference_forward(const HgrnArgs<double>& a, const HgrnOut<double>& out) {
  check_args(a);
  HLA_CHECK(out.o, "o is required");
  const int64_t T = a.d.T, D = a.d.D;
  for (int64_t b = 0; b < a.d.B; ++b) {
    for (int64_t c = 0; c < D; ++c) {
      double h = a.h0 ? a.h0[b * D + c] : 0.0;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t n = (b * T + t) * D + c;
        h = std::exp(a.g[n]) * h + a.x[n];
        out.o[n] = h;
      }
      if (out.hT) out.hT[b * D + c] = h;
    }
  }
}

void hgrn_reference_backward(const HgrnArgs<double>& a, const HgrnGrad<double>& grad) {
  check_args(a);
  HLA_CHECK(grad.dout && grad.dx && grad.dg, "dout, dx and dg are required");
  const int64_t T = a.d.T, D = a.d.D;
  for (int64_t b = 0; b < a.d.B; ++b) {
    for (int64_t c = 0; c < D; ++c) {
      // h[t] = h_t, t = 0..T
      std::vector<double> h(T + 1);
      h[0] = a.h0 ? a.h0[b * D + c] : 0.0;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t n = (b * T + t) * D + c;
        h[t + 1] = std::exp(a.g[n]) * h[t] + a.x[n];
      }

      double dh = grad.dhT ? grad.dhT[b * D + c] : 0.0;
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t n = (b * T + t) * D + c;
        const double f = std::exp(a.g[n]);
        dh += grad.dout[n];
        grad.dx[n] = dh;
        grad.dg[n] = f * h[t] * dh;  // h[t] is h_{t-1} of the maths (1-based time)
        dh *= f;
      }
      if (grad.dh0) grad.dh0[b * D + c] = dh;
    }
  }
}

}  // namespace hla::kernels

// Comparing a result with its reference: relative RMS error (fla's assert_close metric,
// spec/recurrences.md 0.10) with the max abs difference reported beside it.
//
//   REQUIRE_CLOSE("dq", ref_dq, out_dq, 1e-10);
//
// ref and out are any containers with .data() and .size() of arithmetic values (or anything
// close_span() is overloaded for). The check fails on any NaN/Inf in out, on a size mismatch,
// and when ||ref - out||_rms / (||ref||_rms + 1e-30) > tol, unless max |ref - out| <= abs_floor.
#pragma once

#include <catch2/catch.hpp>
#include <cmath>
#include <cstddef>
#include <sstream>
#include <string>
#include <vector>

namespace hla::test {

struct CloseReport {
  double rel_rms = 0, max_abs = 0;
  size_t n_ref = 0, n_out = 0;
  bool finite = true;
  std::string describe(const std::string& name) const {
    std::ostringstream os;
    os << name << ": rel_rms=" << rel_rms << " max_abs=" << max_abs << " n=" << n_ref;
    if (n_ref != n_out) os << " SIZE MISMATCH (ref " << n_ref << ", out " << n_out << ")";
    if (!finite) os << " NON-FINITE VALUES";
    return os.str();
  }
};

template <class A, class B>
CloseReport close_report(const A* ref, size_t n_ref, const B* out, size_t n_out) {
  CloseReport r;
  r.n_ref = n_ref;
  r.n_out = n_out;
  if (n_ref != n_out) return r;
  double se = 0, sr = 0;
  for (size_t i = 0; i < n_ref; ++i) {
    const double a = static_cast<double>(ref[i]), b = static_cast<double>(out[i]);
    if (!std::isfinite(b) || !std::isfinite(a)) r.finite = false;
    se += (a - b) * (a - b);
    sr += a * a;
    r.max_abs = std::max(r.max_abs, std::abs(a - b));
  }
  const double n = n_ref ? static_cast<double>(n_ref) : 1.0;
  r.rel_rms = std::sqrt(se / n) / (std::sqrt(sr / n) + 1e-30);
  return r;
}

template <class CA, class CB>
CloseReport close_report(const CA& ref, const CB& out) {
  return close_report(ref.data(), ref.size(), out.data(), out.size());
}

inline bool close_ok(const CloseReport& r, double tol, double abs_floor) {
  return r.n_ref == r.n_out && r.finite && (r.rel_rms <= tol || r.max_abs <= abs_floor);
}

}  // namespace hla::test

// Relative-RMS check of one named tensor; prints the report on failure (and with -s).
#define REQUIRE_CLOSE(name, ref, out, tol)                                  \
  do {                                                                      \
    const auto hla_rep_ = ::hla::test::close_report((ref), (out));          \
    INFO(hla_rep_.describe(name) << " tol=" << (tol));                      \
    REQUIRE(::hla::test::close_ok(hla_rep_, (tol), 0.0));                   \
  } while (0)

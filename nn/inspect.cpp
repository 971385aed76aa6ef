// The inspection recorder and the derived quantities it computes (nn/inspect.h).
#include "nn/inspect.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/grad_mode.h"
#include "autograd/primitives.h"

namespace hla::inspect {

namespace {
thread_local Recorder* t_active = nullptr;

Tensor to_cpu_f32(const Tensor& t) { return t.to(Device::CPU).to(DType::f32).clone(); }

double horizon_of(double mean_log_decay) {
  if (!(mean_log_decay < 0)) return kMaxHorizon;
  return std::min(kMaxHorizon, -1.0 / mean_log_decay);
}

void require_log_decay(const Tensor& g, const char* op) {
  if (g.dim() != 3 && g.dim() != 4)
    throw Error(op, "a log decay [B,T,H,K] or [B,T,H]", to_string(g.shape()));
}
}  // namespace

// ---- Recorder

Recorder::Recorder(RecordOptions options) : options_(options) {
  if (options_.chunk <= 0)
    throw Error("inspect::Recorder", "a positive chunk", std::to_string(options_.chunk));
}

std::string Recorder::full_path(const std::string& name) const {
  return prefix_.empty() ? name : prefix_ + "/" + name;
}

void Recorder::record(const std::string& name, const Tensor& value, const std::string& description) {
  const std::string path = full_path(name);
  if (has(path))
    throw Error("inspect::Recorder", "each path recorded once", "'" + path + "' twice",
                "set a different prefix per layer (HybridLM does) or record into a new Recorder");
  entries_.push_back({path, to_cpu_f32(value), description});
}

void Recorder::record_step(const std::string& name, const Tensor& value_t,
                           const std::string& description) {
  const std::string path = full_path(name);
  auto [it, inserted] = steps_.try_emplace(path);
  if (inserted) {
    step_order_.push_back(path);
    it->second.description = description;
  }
  it->second.values.push_back(to_cpu_f32(value_t));
}

void Recorder::set_tokens(const Tensor& tokens) { tokens_ = tokens.to(Device::CPU).to(DType::i32).clone(); }

void Recorder::flush_steps() {
  for (const std::string& path : step_order_) {
    Steps& s = steps_.at(path);
    if (s.values.empty()) continue;
    std::vector<Var> vs;
    for (const Tensor& t : s.values) vs.emplace_back(t);
    NoGradGuard no_grad;
    const Tensor stacked = stack(vs, 1).data();
    auto existing = std::find_if(entries_.begin(), entries_.end(),
                                 [&](const Entry& e) { return e.path == path; });
    if (existing == entries_.end()) {
      entries_.push_back({path, stacked, s.description});
    } else {  // more steps after an earlier flush: append on the time dim
      existing->value = concat({Var(existing->value), Var(stacked)}, 1).data();
    }
    s.values.clear();
  }
}

const std::vector<Entry>& Recorder::entries() {
  flush_steps();
  return entries_;
}

bool Recorder::has(const std::string& path) {
  if (steps_.count(path) && !steps_.at(path).values.empty()) return true;
  return std::any_of(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.path == path; });
}

const Tensor& Recorder::get(const std::string& path) {
  for (const Entry& e : entries())
    if (e.path == path) return e.value;
  std::string known;
  for (const Entry& e : entries_)
    if (known.size() < 400) known += (known.empty() ? "" : ", ") + e.path;
  throw Error("inspect::Recorder::get", "a recorded path", "'" + path + "'",
              known.empty() ? "nothing was recorded: was a RecordScope active?" : "recorded: " + known);
}

const std::string& Recorder::description(const std::string& path) {
  get(path);
  for (const Entry& e : entries_)
    if (e.path == path) return e.description;
  throw Error("inspect::Recorder::description", "a recorded path", path);
}

// ---- RecordScope

RecordScope::RecordScope(Recorder& recorder)
    : previous_(t_active), previous_step_(set_step_recorder(&recorder)) {
  t_active = &recorder;
}

RecordScope::~RecordScope() {
  t_active = previous_;
  set_step_recorder(previous_step_);
}

Recorder* active() { return t_active; }

// ---- derived quantities

Tensor horizon_per_step(const Tensor& log_decay) {
  require_log_decay(log_decay, "inspect::horizon_per_step");
  const int64_t B = log_decay.size(0), T = log_decay.size(1), H = log_decay.size(2);
  const int64_t K = log_decay.dim() == 4 ? log_decay.size(3) : 1;
  const std::vector<double> g = log_decay.to_vector<double>();
  std::vector<float> out(B * T * H);
  for (int64_t i = 0; i < B * T * H; ++i) {
    double s = 0;
    for (int64_t j = 0; j < K; ++j) s += g[i * K + j];
    out[i] = static_cast<float>(horizon_of(s / static_cast<double>(K)));
  }
  return Tensor::from_vector(out, {B, T, H});
}

Tensor horizon_per_head(const Tensor& log_decay) {
  require_log_decay(log_decay, "inspect::horizon_per_head");
  const int64_t BT = log_decay.size(0) * log_decay.size(1), H = log_decay.size(2);
  const int64_t K = log_decay.dim() == 4 ? log_decay.size(3) : 1;
  const std::vector<double> g = log_decay.to_vector<double>();
  std::vector<float> out(H);
  for (int64_t h = 0; h < H; ++h) {
    double s = 0;
    for (int64_t i = 0; i < BT; ++i)
      for (int64_t j = 0; j < K; ++j) s += g[(i * H + h) * K + j];
    out[h] = static_cast<float>(horizon_of(s / static_cast<double>(BT * K)));
  }
  return Tensor::from_vector(out, {H});
}

AttentionStats attention_stats(const Tensor& q, const Tensor& k, int64_t window, double scale) {
  if (q.dim() != 4 || k.dim() != 4 || q.size(0) != k.size(0) || q.size(3) != k.size(3) ||
      k.size(2) <= 0 || q.size(2) % k.size(2) != 0 || k.size(1) < q.size(1))
    throw Error("inspect::attention_stats", "q [B,Tq,H,d] and k [B,Tk,Hkv,d] with Tk >= Tq, H % Hkv == 0",
                to_string(q.shape()) + " and " + to_string(k.shape()));
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), d = q.size(3);
  const int64_t Tk = k.size(1), Hkv = k.size(2), groups = H / Hkv;
  const double s = scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(d));
  const std::vector<double> qv = q.to_vector<double>(), kv = k.to_vector<double>();
  std::vector<float> entropy(B * Tq * H), distance(B * Tq * H);
  std::vector<double> logits(Tk);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t pos = Tk - Tq + i;  // key position of query i
        const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
        const double* qp = &qv[((b * Tq + i) * H + h) * d];
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = lo; j <= pos; ++j) {
          const double* kp = &kv[((b * Tk + j) * Hkv + h / groups) * d];
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qp[c] * kp[c];
          logits[j] = dot * s;
          mx = std::max(mx, logits[j]);
        }
        double z = 0;
        for (int64_t j = lo; j <= pos; ++j) z += std::exp(logits[j] - mx);
        double ent = 0, dist = 0;
        for (int64_t j = lo; j <= pos; ++j) {
          const double p = std::exp(logits[j] - mx) / z;
          if (p > 0) ent -= p * std::log(p);
          dist += p * static_cast<double>(pos - j);
        }
        entropy[(b * Tq + i) * H + h] = static_cast<float>(ent);
        distance[(b * Tq + i) * H + h] = static_cast<float>(dist);
      }
  return {Tensor::from_vector(entropy, {B, Tq, H}), Tensor::from_vector(distance, {B, Tq, H})};
}

void record_state_norms(Recorder& rec, const RecurrenceSlice& run, int64_t T, const Var& h0,
                        const std::string& what) {
  NoGradGuard no_grad;
  const RecordOptions& opt = rec.options();
  if (opt.state_norms == StateNorms::Off || T <= 0) return;
  std::vector<Var> norms;
  std::vector<float> ends;
  Var h = h0;
  const bool exact = opt.state_norms == StateNorms::Exact;
  const int64_t step = exact ? 1 : opt.chunk;
  for (int64_t t0 = 0; t0 < T; t0 += step) {
    const int64_t t1 = std::min(T, t0 + step);
    h = run(t0, t1, h, exact ? Impl::Recurrent : Impl::Chunk);
    norms.emplace_back(state_norm(h.data()));
    ends.push_back(static_cast<float>(t1 - 1));
  }
  const Tensor stacked = stack(norms, 1).data();  // [B,N,H]
  if (exact) {
    rec.record("state_norm", stacked,
               "||S_t||_F per head after step t, " + what +
                   " [B,T,H]; exact: the recurrence run step by step (Impl::Recurrent) with state carry");
  } else {
    rec.record("state_norm_chunk", stacked,
               "||S_t||_F per head at chunk boundaries only (t = state_norm_chunk_end), " + what +
                   " [B,N,H]; the recurrence run chunk by chunk (Impl::Chunk, chunk " +
                   std::to_string(opt.chunk) + ") with state carry");
    rec.record("state_norm_chunk_end", Tensor::from_vector(ends, {static_cast<int64_t>(ends.size())}),
               "time index t of each state_norm_chunk entry (the last step of its chunk) [N]");
  }
}

void record_horizons(Recorder& rec, const Tensor& log_decay) {
  rec.record("horizon", horizon_per_step(log_decay),
             "effective memory horizon per step, 1 / (-mean_K log decay_t): steps until the "
             "cumulative decay falls below 1/e were the gate to stay as at t (capped at 1e6) [B,T,H]");
  rec.record("horizon_head", horizon_per_head(log_decay),
             "effective memory horizon per head, 1 / (-mean over B,T,K of the log decay): steps "
             "until the cumulative decay falls below 1/e at the head's mean gate (capped at 1e6) [H]");
}

}  // namespace hla::inspect

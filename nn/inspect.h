// defines: the inspection recorder. Inside a RecordScope every mixer records, per layer, head and
// time step, the quantities that describe its memory (gates, write strengths, state norms,
// memory horizons, attention entropy and distance); outside one, recording is off and costs one
// thread-local pointer check per mixer call. docs/inspect.md lists every dataset.
//
//   inspect::Recorder rec;                       // options: exact or chunk-boundary state norms
//   {
//     inspect::RecordScope scope(rec);           // on for this thread until the scope ends
//     NoGradGuard no_grad;
//     model.forward(tokens);                     // HybridLM sets the prefix "layer_03/gla"
//   }
//   const Tensor& decay = rec.get("layer_03/gla/decay");   // [B,T,H,K], CPU f32
//   for (const auto& e : rec.entries()) ...                 // path, value, description
//
// The HDF5 form (one dataset per entry, a `description` attribute on each, plus /tokens) is
// written by `hla inspect` (experiments/cli/cmd_inspect.cpp): hla_nn does not link HDF5.
//
// Paths: a mixer records relative names ("decay"); the recorder prefixes the current prefix
// ("layer_03/gla/decay"). Recording a path twice throws. Per-step records (record_step, the
// StepRule hook of autograd/step_rule.h) are stacked on dim 1 in call order when entries() or
// get() is called: [B,...] per step -> [B,T,...].
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autograd/step_rule.h"
#include "autograd/var.h"

namespace hla::inspect {

// How mixers record ||S_t||_F.
enum class StateNorms {
  Exact,           // "state_norm" [B,T,H]: the recurrence op run one step at a time with h0/hT carry
  ChunkBoundaries, // "state_norm_chunk" [B,N,H] at the end of each chunk (t in
                   // "state_norm_chunk_end" [N]): the op run chunk by chunk (Impl::Chunk)
  Off,             // no state norms (the cheapest recording)
};

struct RecordOptions {
  StateNorms state_norms = StateNorms::Exact;
  int64_t chunk = 64;  // chunk length for StateNorms::ChunkBoundaries (the kernels' chunk)
};

struct Entry {
  std::string path;         // "layer_03/gla/decay" (no leading slash)
  Tensor value;             // CPU f32, contiguous, a copy (never aliases model data)
  std::string description;  // what it is, with its shape letters: "per-key decay ... [B,T,H,K]"
};

class Recorder : public StepRecorder {
 public:
  explicit Recorder(RecordOptions options = {});
  const RecordOptions& options() const { return options_; }

  // Records `value` (any dtype/device; copied to CPU f32) under prefix/name. Throws hla::Error if
  // the path was recorded before.
  void record(const std::string& name, const Tensor& value, const std::string& description);
  // One time step [B,...] of prefix/name; steps are stacked on dim 1 -> [B,T,...].
  void record_step(const std::string& name, const Tensor& value_t,
                   const std::string& description) override;

  // "layer_03/gla" ("" = the root). HybridLM sets it before each block.
  void set_prefix(const std::string& prefix) { prefix_ = prefix; }
  const std::string& prefix() const { return prefix_; }

  // The input tokens [B,T] (int32; HybridLM stores them on each forward).
  void set_tokens(const Tensor& tokens);
  const Tensor& tokens() const { return tokens_; }

  // Every entry in recording order (per-step records stacked first).
  const std::vector<Entry>& entries();
  bool has(const std::string& path);
  // The tensor at `path`; throws hla::Error listing similar paths if absent.
  const Tensor& get(const std::string& path);
  const std::string& description(const std::string& path);

 private:
  void flush_steps();
  std::string full_path(const std::string& name) const;

  RecordOptions options_;
  std::string prefix_;
  Tensor tokens_;
  std::vector<Entry> entries_;
  struct Steps {
    std::vector<Tensor> values;
    std::string description;
  };
  std::vector<std::string> step_order_;
  std::map<std::string, Steps> steps_;
};

// Turns recording on for this thread (mixers and StepRules), restoring the previous recorder
// (usually none) when destroyed. Scopes nest: the innermost recorder receives the records.
class RecordScope {
 public:
  explicit RecordScope(Recorder& recorder);
  ~RecordScope();
  RecordScope(const RecordScope&) = delete;
  RecordScope& operator=(const RecordScope&) = delete;

 private:
  Recorder* previous_;
  StepRecorder* previous_step_;
};

// The recorder of this thread, or null when recording is off.
Recorder* active();

// ---- derived quantities (computed only while recording; public for tests)

// Memory horizons cap: a decay of exactly 1 (or > 1) has no finite horizon.
inline constexpr double kMaxHorizon = 1e6;

// log_decay [B,T,H,K] or [B,T,H] (natural log, <= 0) -> [B,T,H]: 1 / (-mean_K log_decay), the
// number of steps after which the cumulative decay exp(n * mean log_decay) falls to 1/e if the
// gate stayed at its value at t (capped at kMaxHorizon).
Tensor horizon_per_step(const Tensor& log_decay);
// -> [H]: the same with the log decay averaged over B, T (and K): the head's typical horizon.
Tensor horizon_per_head(const Tensor& log_decay);

struct AttentionStats {
  Tensor entropy;   // [B,Tq,H]: -sum_j A_ij log A_ij (nats; 0 = attends one key)
  Tensor distance;  // [B,Tq,H]: sum_j A_ij (i - j), in tokens (0 = attends itself)
};
// Softmax attention weights of q [B,Tq,H,d] over k [B,Tk,Hkv,d] (the queries are the last Tq
// positions; causal; window > 0 keeps j > i - window; scale 0 = d^-1/2), reduced to entropy and
// mean attended distance. Computed in double.
AttentionStats attention_stats(const Tensor& q, const Tensor& k, int64_t window, double scale = 0);

// Records the state norms of one recurrence under "state_norm" (or "state_norm_chunk" and
// "state_norm_chunk_end"), as the active recorder's options say. run(t0, t1, h0) must run the
// mixer's recurrence op on time steps [t0, t1) from state h0 (undefined = zeros) with the given
// impl and return hT. Call only while recording (it runs the op T or T/chunk more times).
using RecurrenceSlice = std::function<Var(int64_t t0, int64_t t1, const Var& h0, Impl impl)>;
void record_state_norms(Recorder& rec, const RecurrenceSlice& run, int64_t T, const Var& h0,
                        const std::string& what);

// Records "horizon" [B,T,H] and "horizon_head" [H] from log_decay ([B,T,H,K] or [B,T,H]).
void record_horizons(Recorder& rec, const Tensor& log_decay);

}  // namespace hla::inspect

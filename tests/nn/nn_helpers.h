// Shared helpers of the nn tests: tiny f64 mixers, value extraction, parameter finite differences.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/primitives.h"
#include "nn/mixer.h"
#include "nn/mixers/attention.h"
#include "nn/mixers/delta_net.h"
#include "nn/mixers/gated_deltanet.h"
#include "nn/mixers/gla.h"
#include "nn/mixers/hgrn.h"
#include "nn/mixers/hgrn2.h"
#include "nn/mixers/retnet.h"

namespace hla::test {

inline std::vector<double> values(const Var& v) { return v.data().to_vector<double>(); }
inline std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

constexpr int64_t kTinyHidden = 16;

// Every mixer kind at hidden 16, short convs on where the layer has them (to exercise caches),
// and each linear mixer once more with its non-default fla options: GQA with a feature map and a
// clamp (GLA), GQA with a feature map (RetNet), no beta with elu + 1 and sum norm, and the output
// gate with beta (DeltaNet), two value heads per q/k head (Gated DeltaNet).
inline const std::vector<std::string>& mixer_kinds() {
  static const std::vector<std::string> k = {
      "hgrn", "hgrn2", "gla", "retnet", "delta_net", "gated_deltanet", "attention",
      "attention_window", "gla_options", "retnet_options", "delta_net_options",
      "delta_net_gate", "gated_deltanet_gva"};
  return k;
}

inline std::shared_ptr<nn::Mixer> tiny_mixer(const std::string& kind, Generator& gen,
                                             DType dtype = DType::f64) {
  using namespace nn;
  const int64_t d = kTinyHidden;
  // Larger weights than 0.02 so that every path (gates, norms) carries signal in the checks.
  const double std = 0.3;
  std::shared_ptr<Mixer> m;
  if (kind == "hgrn")
    m = std::make_shared<HGRNAttention>(HGRNOptions{.hidden_size = d, .use_short_conv = true, .initializer_range = std}, gen);
  else if (kind == "hgrn2")
    m = std::make_shared<HGRN2Attention>(HGRN2Options{.hidden_size = d, .expand_ratio = 4, .use_short_conv = true, .initializer_range = std}, gen);
  else if (kind == "gla")
    m = std::make_shared<GatedLinearAttention>(GLAOptions{.hidden_size = d, .num_heads = 2, .use_short_conv = true, .initializer_range = std}, gen);
  else if (kind == "retnet")
    m = std::make_shared<MultiScaleRetention>(RetNetOptions{.hidden_size = d, .num_heads = 2, .initializer_range = std}, gen);
  else if (kind == "delta_net")
    m = std::make_shared<DeltaNet>(DeltaNetOptions{.hidden_size = d, .num_heads = 2, .initializer_range = std}, gen);
  else if (kind == "gated_deltanet")
    m = std::make_shared<GatedDeltaNet>(GatedDeltaNetOptions{.hidden_size = d, .head_dim = 4, .num_heads = 2, .initializer_range = std}, gen);
  else if (kind == "gla_options")
    m = std::make_shared<GatedLinearAttention>(GLAOptions{.hidden_size = d, .num_heads = 4, .num_kv_heads = 2, .feature_map = "silu", .use_short_conv = true, .clamp_min = -0.05, .initializer_range = std}, gen);
  else if (kind == "retnet_options")
    m = std::make_shared<MultiScaleRetention>(RetNetOptions{.hidden_size = d, .num_heads = 2, .num_kv_heads = 1, .feature_map = "sigmoid", .initializer_range = std}, gen);
  else if (kind == "delta_net_options")
    m = std::make_shared<DeltaNet>(DeltaNetOptions{.hidden_size = d, .num_heads = 2, .use_beta = false, .qk_activation = "elu", .qk_norm = "sum", .initializer_range = std}, gen);
  else if (kind == "delta_net_gate")
    m = std::make_shared<DeltaNet>(DeltaNetOptions{.hidden_size = d, .num_heads = 2, .use_gate = true, .initializer_range = std}, gen);
  else if (kind == "gated_deltanet_gva")
    m = std::make_shared<GatedDeltaNet>(GatedDeltaNetOptions{.hidden_size = d, .head_dim = 4, .num_heads = 2, .num_v_heads = 4, .initializer_range = std}, gen);
  else if (kind == "attention")
    m = std::make_shared<Attention>(AttentionLayerOptions{.hidden_size = d, .num_heads = 4, .num_kv_heads = 2, .initializer_range = std}, gen);
  else
    m = std::make_shared<Attention>(AttentionLayerOptions{.hidden_size = d, .num_heads = 2, .window_size = 3, .initializer_range = std}, gen);
  m->to(dtype);
  return m;
}

// A lower bound row [hidden] in [0.2, 0.6) for the HGRN mixers, undefined for the others.
inline Var tiny_lower_bound(const std::string& kind, Generator& gen) {
  if (kind != "hgrn" && kind != "hgrn2") return Var();
  return Var(Tensor::rand({kTinyHidden}, gen, DType::f64, 0.2, 0.6));
}

}  // namespace hla::test

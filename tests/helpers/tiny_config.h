// The tiny model and task the CLI tests train: a 2-layer GLA 1:1 hybrid (hidden 32) on MQAR.
// Tests append the [optim] / [train] tables they need.
#pragma once

#include <string>

namespace hla::test {

inline const std::string kTinyHybridOnMqar = R"(
[model]
variant = "gla"
layout = "1:1"
hidden_size = 32
num_layers = 2
num_heads = 2
attn_num_heads = 2
attn_num_kv_heads = 2
[data]
task = "mqar:vocab_size=32,pairs=2"
)";

}  // namespace hla::test

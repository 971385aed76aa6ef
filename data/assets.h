// defines: where the runtime finds the files it ships (data/assets/ of the source tree).
//
// The directory is the environment variable HLA_ASSETS_DIR when set and non-empty, otherwise the
// path baked in at build time (the compile definition HLA_ASSETS_DIR of the hla_data target,
// <source>/data/assets). Its contents are listed in data/assets/README.md:
//   moby_dick.txt             the public-domain corpus that training uses out of the box
//   gpt2/encoder.json, vocab.bpe   the GPT-2 BPE files
#pragma once

#include <string>

namespace hla::data {

// The assets directory (no trailing slash).
std::string assets_dir();

// assets_dir() + "/" + relative, after checking that the file exists; throws hla::Error naming
// the path and the HLA_ASSETS_DIR override otherwise.
std::string asset_path(const std::string& relative);

}  // namespace hla::data

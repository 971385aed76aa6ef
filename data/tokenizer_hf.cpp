// defines: HfBpeTokenizer (see tokenizer_hf.h).
#include "data/tokenizer_hf.h"

#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "tensor/error.h"

namespace hla::data {

namespace {

using json = nlohmann::json;

constexpr std::string_view kMetaspace = "\xe2\x96\x81";  // U+2581 "▁"

struct AddedToken {
  int32_t id;
  std::string content;
  bool special;
};

// The length of the UTF-8 character at text[i], or 1 for a byte that does not start a valid
// sequence (it then stands for itself and takes the byte fallback).
size_t utf8_char_length(std::string_view text, size_t i) {
  const auto b = static_cast<unsigned char>(text[i]);
  const size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : (b >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > text.size()) return 1;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) return 1;
  return n;
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  if (from.empty()) return s;
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

}  // namespace

struct HfBpeTokenizer::Impl {
  std::string path;
  std::vector<std::string> tokens;  // id -> token string (vocab and added tokens)
  std::unordered_map<std::string, int32_t> vocab;
  std::map<std::pair<int32_t, int32_t>, std::pair<int32_t, int32_t>> merges;  // -> (rank, id)
  std::vector<AddedToken> added;
  std::vector<bool> is_added;
  std::vector<int> byte_token;  // byte -> id of <0xXX>, -1 if absent
  std::vector<int> byte_of;     // id -> its byte for <0xXX> tokens, -1 otherwise
  int32_t unk = -1, eot = -1;
  bool byte_fallback = false, fuse_unk = false;
  // Normalisation as an ordered list of steps (prepend / replace).
  struct Step {
    bool prepend;
    std::string pattern, content;
  };
  std::vector<Step> normalizer;
  bool strip_leading_space = false;  // the decoder undoes a prepended "▁"
  // Metaspace pre-tokeniser.
  bool metaspace = false, metaspace_split = false;
  std::string metaspace_replacement, prepend_scheme;

  [[noreturn]] void fail(const std::string& key, const std::string& expected,
                         const std::string& actual, const std::string& hint = "") const {
    throw Error("tokenizer " + path + ": " + key, expected, actual, hint);
  }

  void read_normalizer(const json& n) {
    if (n.is_null()) return;
    const std::string type = n.value("type", "");
    if (type == "Sequence") {
      for (const json& step : n.at("normalizers")) read_normalizer(step);
    } else if (type == "Prepend") {
      normalizer.push_back({true, "", n.at("prepend").get<std::string>()});
      if (normalizer.back().content == kMetaspace) strip_leading_space = true;
    } else if (type == "Replace") {
      if (!n.at("pattern").contains("String"))
        fail("normalizer.pattern", "a {\"String\": ...} pattern", n.at("pattern").dump(),
             "regex patterns are not supported");
      normalizer.push_back(
          {false, n.at("pattern").at("String").get<std::string>(), n.at("content").get<std::string>()});
    } else {
      fail("normalizer.type", "Prepend, Replace or a Sequence of them", "\"" + type + "\"");
    }
  }

  void read_pre_tokenizer(const json& p) {
    if (p.is_null()) return;
    const std::string type = p.value("type", "");
    if (type != "Metaspace")
      fail("pre_tokenizer.type", "null or Metaspace", "\"" + type + "\"",
           "only Llama-style (sentencepiece-like) BPE tokenizers are supported");
    metaspace = true;
    metaspace_replacement = p.value("replacement", std::string(kMetaspace));
    prepend_scheme = p.contains("prepend_scheme") ? p.at("prepend_scheme").get<std::string>()
                     : p.value("add_prefix_space", true) ? "always" : "never";
    if (prepend_scheme != "always" && prepend_scheme != "first" && prepend_scheme != "never")
      fail("pre_tokenizer.prepend_scheme", "always, first or never", prepend_scheme);
    metaspace_split = p.value("split", true);
    if (prepend_scheme != "never") strip_leading_space = true;
  }

  int32_t add_token(const std::string& token, int64_t id, const std::string& where) {
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      fail(where, "an id in [0, 2^31)", std::to_string(id));
    if (static_cast<size_t>(id) >= tokens.size()) tokens.resize(id + 1), is_added.resize(id + 1);
    if (!tokens[id].empty() && tokens[id] != token)
      fail(where, "one token per id", "id " + std::to_string(id) + " for both '" + tokens[id] +
                                          "' and '" + token + "'");
    tokens[id] = token;
    return static_cast<int32_t>(id);
  }

  int32_t id_of(const std::string& token, const std::string& where) const {
    const auto it = vocab.find(token);
    if (it == vocab.end()) fail(where, "a token of the vocab", "'" + token + "'");
    return it->second;
  }

  // Splits on added tokens (leftmost, longest); `all` also matches special ones. Calls
  // on_text(segment) and on_added(id) in order.
  template <class Text, class Added>
  void split_added(std::string_view text, bool all, Text on_text, Added on_added) const {
    size_t start = 0, i = 0;
    while (i < text.size()) {
      const AddedToken* best = nullptr;
      for (const AddedToken& a : added)
        if ((all || !a.special) && text.compare(i, a.content.size(), a.content) == 0 &&
            (!best || a.content.size() > best->content.size()))
          best = &a;
      if (!best) {
        ++i;
        continue;
      }
      if (i > start) on_text(text.substr(start, i - start));
      on_added(best->id);
      i += best->content.size();
      start = i;
    }
    if (start < text.size()) on_text(text.substr(start));
  }

  // Normalisation and pre-tokenisation of one segment into words.
  std::vector<std::string> words(std::string_view segment, bool first_segment) const {
    std::string s(segment);
    for (const Step& step : normalizer)
      s = step.prepend ? (s.empty() ? s : step.content + s) : replace_all(s, step.pattern, step.content);
    if (!metaspace) return {s};
    s = replace_all(s, " ", metaspace_replacement);
    const bool prepend = prepend_scheme == "always" || (prepend_scheme == "first" && first_segment);
    if (prepend && !s.empty() && s.compare(0, metaspace_replacement.size(), metaspace_replacement) != 0)
      s = metaspace_replacement + s;
    if (!metaspace_split) return {s};
    // Each word begins at a replacement character.
    std::vector<std::string> out;
    size_t begin = 0;
    for (size_t at = s.find(metaspace_replacement, 1); at != std::string::npos;
         at = s.find(metaspace_replacement, at + 1)) {
      out.push_back(s.substr(begin, at - begin));
      begin = at;
    }
    out.push_back(s.substr(begin));
    return out;
  }

  void bpe(const std::string& word, std::vector<int32_t>& out) const {
    // As tokenizers' BPE::merge_word: an unknown character leaves a pending <unk> (fused with
    // the next unknown one when fuse_unk) that is written before the next vocabulary character
    // or at the end of the word; byte-fallback tokens do not flush it, so they can come first.
    std::vector<int32_t> symbols;
    bool pending_unk = false;
    for (size_t i = 0; i < word.size();) {
      const size_t n = utf8_char_length(word, i);
      const auto it = vocab.find(word.substr(i, n));
      if (it != vocab.end()) {
        if (pending_unk) symbols.push_back(unk), pending_unk = false;
        symbols.push_back(it->second);
      } else {
        bool all_bytes = byte_fallback;
        for (size_t k = 0; k < n; ++k)
          all_bytes = all_bytes && byte_token[static_cast<unsigned char>(word[i + k])] >= 0;
        if (all_bytes) {
          for (size_t k = 0; k < n; ++k)
            symbols.push_back(byte_token[static_cast<unsigned char>(word[i + k])]);
        } else {
          if (unk < 0)
            fail("model.unk_token", "an unknown-token for characters outside the vocab",
                 "none, and the text has '" + word.substr(i, n) + "'");
          if (pending_unk && !fuse_unk) symbols.push_back(unk);
          pending_unk = true;
        }
      }
      i += n;
    }
    if (pending_unk) symbols.push_back(unk);
    for (;;) {
      size_t best = 0;
      std::pair<int32_t, int32_t> best_merge{std::numeric_limits<int32_t>::max(), -1};
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        const auto it = merges.find({symbols[i], symbols[i + 1]});
        if (it != merges.end() && it->second.first < best_merge.first) best = i, best_merge = it->second;
      }
      if (best_merge.second < 0) break;
      symbols[best] = best_merge.second;
      symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
  }

  std::vector<int32_t> encode(std::string_view text, bool all_added) const {
    std::vector<int32_t> ids;
    bool first = true;
    split_added(
        text, all_added,
        [&](std::string_view segment) {
          for (const std::string& w : words(segment, first)) bpe(w, ids);
          first = false;
        },
        [&](int32_t id) {
          ids.push_back(id);
          first = false;
        });
    return ids;
  }
};

HfBpeTokenizer::HfBpeTokenizer(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error("tokenizer", "a readable tokenizer.json", "'" + path + "' cannot be opened",
                "load_tokenizer(\"hf:PATH\") takes the path of a Hugging Face tokenizer.json");
  const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    throw Error("tokenizer " + path, "a JSON object (Hugging Face tokenizer.json)",
                "text that does not parse as one");
  try {
    const json& model = j.at("model");
    if (model.value("type", "") != "BPE")
      m.fail("model.type", "\"BPE\"", model.value("type", "nothing"),
             "only BPE tokenizers (Llama-2 style) are supported");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (model.contains(key) && !model[key].is_null() && model[key] != "")
        m.fail(std::string("model.") + key, "null", model[key].dump());
    if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"] != 0)
      m.fail("model.dropout", "null (deterministic encoding)", model["dropout"].dump());
    m.byte_fallback = model.value("byte_fallback", false);
    m.fuse_unk = model.value("fuse_unk", false);
    for (auto& [token, id] : model.at("vocab").items()) {
      m.add_token(token, id.get<int64_t>(), "model.vocab['" + token + "']");
      m.vocab[token] = static_cast<int32_t>(id.get<int64_t>());
    }
    int32_t rank = 0;
    for (const json& merge : model.at("merges")) {
      std::string a, b;
      if (merge.is_string()) {
        const std::string s = merge.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          m.fail("model.merges[" + std::to_string(rank) + "]", "\"a b\"", merge.dump());
        a = s.substr(0, space), b = s.substr(space + 1);
      } else {
        if (!merge.is_array() || merge.size() != 2)
          m.fail("model.merges[" + std::to_string(rank) + "]", "[\"a\", \"b\"]", merge.dump());
        a = merge[0].get<std::string>(), b = merge[1].get<std::string>();
      }
      const std::string where = "model.merges[" + std::to_string(rank) + "] " + merge.dump();
      const int32_t left = m.id_of(a, where), right = m.id_of(b, where);
      m.merges.emplace(std::make_pair(left, right), std::make_pair(rank, m.id_of(a + b, where)));
      ++rank;
    }
    for (const json& t : j.value("added_tokens", json::array())) {
      const std::string content = t.at("content").get<std::string>();
      for (const char* flag : {"lstrip", "rstrip", "single_word"})
        if (t.value(flag, false))
          m.fail("added_tokens '" + content + "'", std::string(flag) + " false", "true",
                 "added tokens that strip whitespace are not supported");
      if (content.empty()) m.fail("added_tokens", "non-empty contents", "\"\"");
      const int32_t id = m.add_token(content, t.at("id").get<int64_t>(), "added_tokens '" + content + "'");
      m.added.push_back({id, content, t.value("special", false)});
    }
    m.is_added.assign(m.tokens.size(), false);
    for (const AddedToken& a : m.added) m.is_added[a.id] = true;
    for (size_t id = 0; id < m.tokens.size(); ++id)
      if (m.tokens[id].empty())
        m.fail("model.vocab", "ids 0.." + std::to_string(m.tokens.size() - 1) + " without gaps",
               "no token with id " + std::to_string(id));
    m.byte_token.assign(256, -1);
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const auto it = m.vocab.find(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
      if (it != m.vocab.end()) m.byte_token[b] = it->second;
    }
    m.byte_of.assign(m.tokens.size(), -1);
    for (int b = 0; b < 256; ++b)
      if (m.byte_token[b] >= 0 && !m.is_added[m.byte_token[b]]) m.byte_of[m.byte_token[b]] = b;
    if (model.contains("unk_token") && !model["unk_token"].is_null())
      m.unk = m.id_of(model["unk_token"].get<std::string>(), "model.unk_token");
    m.read_normalizer(j.value("normalizer", json()));
    m.read_pre_tokenizer(j.value("pre_tokenizer", json()));
    for (const char* eot : {"</s>", "<|endoftext|>", "<|end_of_text|>"}) {
      for (const AddedToken& a : m.added)
        if (a.content == eot) m.eot = a.id;
      if (m.eot >= 0) break;
    }
    if (m.eot < 0)
      m.fail("added_tokens", "an end-of-text token </s>, <|endoftext|> or <|end_of_text|>",
             "none of them");
  } catch (const json::exception& e) {
    throw Error("tokenizer " + path, "Hugging Face's tokenizer.json schema", e.what());
  }
}

HfBpeTokenizer::~HfBpeTokenizer() = default;

std::string HfBpeTokenizer::name() const { return "hf:" + impl_->path; }
int32_t HfBpeTokenizer::vocab_size() const { return static_cast<int32_t>(impl_->tokens.size()); }
int32_t HfBpeTokenizer::eot_id() const { return impl_->eot; }

std::vector<int32_t> HfBpeTokenizer::encode_ordinary(std::string_view text) const {
  return impl_->encode(text, /*all_added=*/false);
}

std::vector<int32_t> HfBpeTokenizer::encode_added(std::string_view text) const {
  return impl_->encode(text, /*all_added=*/true);
}

void HfBpeTokenizer::append_bytes(int32_t id, std::string& out) const {
  const Impl& m = *impl_;
  const std::string& token = m.tokens[id];
  if (m.is_added[id]) {
    out += token;
    return;
  }
  if (m.byte_of[id] >= 0) {
    out.push_back(static_cast<char>(m.byte_of[id]));
    return;
  }
  std::string text = replace_all(token, m.metaspace ? m.metaspace_replacement : kMetaspace, " ");
  // The decoder's Strip: the space that the normaliser prepended to the text. Tokenizer::decode
  // appends token by token, so "first" means "nothing decoded yet": after a first token that is
  // a lone "▁" the next token loses its space too (tokenizers keeps it).
  if (out.empty() && m.strip_leading_space && !text.empty() && text[0] == ' ') text.erase(0, 1);
  out += text;
}

}  // namespace hla::data

// defines: Gpt2Tokenizer (see tokenizer_gpt2.h): file loading, PCRE2 pre-tokenisation, and BPE
// merging with a min-heap over adjacent pairs (O(n log n) per piece, so long runs of one
// character stay fast).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "data/tokenizer_gpt2.h"

#include <pcre2.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "data/file_io.h"
#include "tensor/error.h"

namespace hla::data {

namespace {

// ---- helpers

constexpr const char* kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's byte-to-unicode table: printable Latin-1 bytes map to themselves, the other 68 bytes
// to code points 256..323, so that every token is a printable string in encoder.json.
std::array<uint32_t, 256> byte_to_code_point() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? b : next++;
  }
  return map;
}

// Length of the longest valid UTF-8 prefix of s[0, n), by PCRE2's rules (no overlongs, no
// surrogates, nothing above U+10FFFF), so PCRE2_NO_UTF_CHECK is safe on it.
size_t valid_utf8_prefix(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return n;
}

// The code points of a UTF-8 string read from encoder.json / vocab.bpe (valid by construction
// of nlohmann::json; vocab.bpe is checked by the caller through the table lookup).
std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (int k = 1; k < len && i + k < s.size(); ++k) {
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    cps.push_back(cp);
    i += len;
  }
  return cps;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Merge {
  int32_t rank;    // line of vocab.bpe: lower merges first
  int32_t merged;  // id of the concatenation
};

// A candidate merge of the symbols at `pos` and its successor, valid while they still hold
// `left` and `right`.
struct Candidate {
  int32_t rank, pos, left, right;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

// ---- tables

struct Gpt2Tokenizer::Impl {
  std::vector<std::string> id_bytes;           // id -> raw bytes
  std::array<int32_t, 256> byte_id{};          // single byte -> id
  std::unordered_map<uint64_t, Merge> merges;  // (left id, right id) -> merge
  int32_t eot = -1;
  pcre2_code* pattern = nullptr;

  ~Impl() { pcre2_code_free(pattern); }

  // BPE-encodes one pre-token piece, appending its ids.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
};

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& encoder_json_path,
                             const std::string& vocab_bpe_path)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const std::string op = "gpt2 tokenizer";

  std::array<int32_t, 324> code_point_byte;  // inverse of byte_to_code_point
  code_point_byte.fill(-1);
  const auto cp_of = byte_to_code_point();
  for (int b = 0; b < 256; ++b) code_point_byte[cp_of[b]] = b;
  // a token as written in the files -> its raw bytes; nullopt if outside the alphabet
  const auto raw_bytes = [&](std::string_view token) -> std::optional<std::string> {
    std::string raw;
    for (uint32_t cp : code_points(token)) {
      if (cp >= code_point_byte.size() || code_point_byte[cp] < 0) return std::nullopt;
      raw.push_back(static_cast<char>(code_point_byte[cp]));
    }
    return raw;
  };

  // encoder.json: token strings -> raw bytes
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(read_file(encoder_json_path, op));
  } catch (const nlohmann::json::exception& e) {
    throw Error(op, "a JSON object {token: id} in " + encoder_json_path, e.what());
  }
  if (!encoder.is_object() || encoder.empty()) {
    throw Error(op, "a non-empty JSON object {token: id} in " + encoder_json_path,
                std::string(encoder.type_name()));
  }
  m.id_bytes.assign(encoder.size(), std::string());
  std::vector<bool> seen(encoder.size(), false);
  std::unordered_map<std::string, int32_t> bytes_id;
  for (const auto& [token, value] : encoder.items()) {
    const int64_t id = value.is_number_integer() ? value.get<int64_t>() : -1;
    if (id < 0 || id >= static_cast<int64_t>(encoder.size()) || seen[id]) {
      throw Error(
          op, "distinct ids in [0, " + std::to_string(encoder.size()) + ") in " + encoder_json_path,
          "'" + token + "': " + value.dump());
    }
    seen[id] = true;
    if (token == kEndOfText) {
      m.eot = static_cast<int32_t>(id);
      continue;
    }
    std::optional<std::string> raw = raw_bytes(token);
    if (!raw) {
      throw Error(op, "tokens written in GPT-2's byte-to-unicode alphabet in " + encoder_json_path,
                  "'" + token + "'");
    }
    bytes_id[*raw] = static_cast<int32_t>(id);
    m.id_bytes[id] = std::move(*raw);
  }
  if (m.eot < 0) {
    throw Error(op, "the token \"<|endoftext|>\" in " + encoder_json_path, "none");
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = bytes_id.find(std::string(1, static_cast<char>(b)));
    if (it == bytes_id.end()) {
      throw Error(op, "a token for every single byte in " + encoder_json_path,
                  "none for byte " + std::to_string(b));
    }
    m.byte_id[b] = it->second;
  }

  // vocab.bpe: merges in priority order
  std::istringstream lines(read_file(vocab_bpe_path, op));
  std::string line;
  int32_t rank = 0;
  int64_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    const auto id_of = [&](std::string_view token) -> int32_t {
      const std::optional<std::string> raw = raw_bytes(token);
      const auto it = raw ? bytes_id.find(*raw) : bytes_id.end();
      return it == bytes_id.end() ? -1 : it->second;
    };
    int32_t left = -1, right = -1, merged = -1;
    if (space != std::string::npos) {
      left = id_of(std::string_view(line).substr(0, space));
      right = id_of(std::string_view(line).substr(space + 1));
      if (left >= 0 && right >= 0) {
        const auto it = bytes_id.find(m.id_bytes[left] + m.id_bytes[right]);
        if (it != bytes_id.end()) merged = it->second;
      }
    }
    if (merged < 0) {
      throw Error(op, "merges 'a b' of tokens whose concatenation is a token, in " + vocab_bpe_path,
                  "line " + std::to_string(line_no) + ": '" + line + "'",
                  "encoder.json and vocab.bpe must come from the same tokenizer");
    }
    m.merges.emplace(pair_key(left, right), Merge{rank++, merged});
  }

  // the pattern, JIT-compiled when PCRE2 supports it on this machine
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  m.pattern = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                            PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  HLA_CHECK(m.pattern != nullptr,
            "pcre2_compile failed with code " << err << " at offset " << err_offset);
  pcre2_jit_compile(m.pattern, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
}

Gpt2Tokenizer::~Gpt2Tokenizer() = default;

int32_t Gpt2Tokenizer::vocab_size() const {
  return static_cast<int32_t>(impl_->id_bytes.size());
}

int32_t Gpt2Tokenizer::eot_id() const {
  return impl_->eot;
}

void Gpt2Tokenizer::append_bytes(int32_t id, std::string& out) const {
  out += impl_->id_bytes[id];
}

// ---- BPE

void Gpt2Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  const int32_t n = static_cast<int32_t>(piece.size());
  if (n == 1) {
    out.push_back(byte_id[static_cast<unsigned char>(piece[0])]);
    return;
  }
  // A doubly linked list of symbols; a merged-away symbol gets id -1.
  std::vector<int32_t> ids(n), prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) {
    ids[i] = byte_id[static_cast<unsigned char>(piece[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  std::vector<Candidate> heap;
  const auto consider = [&](int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    const auto it = merges.find(pair_key(ids[pos], ids[next[pos]]));
    if (it == merges.end()) return;
    heap.push_back({it->second.rank, pos, ids[pos], ids[next[pos]]});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    const int32_t right = next[c.pos];
    // stale: one side was merged since this candidate was pushed
    if (ids[c.pos] != c.left || right < 0 || ids[right] != c.right) continue;
    ids[c.pos] = merges.at(pair_key(c.left, c.right)).merged;
    ids[right] = -1;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    consider(prev[c.pos]);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
}

// ---- pre-tokenisation

std::vector<int32_t> Gpt2Tokenizer::encode_ordinary(std::string_view text) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3);
  const std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(m.pattern, nullptr), &pcre2_match_data_free);
  HLA_CHECK(match != nullptr, "pcre2_match_data_create_from_pattern: out of memory");
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t valid = valid_utf8_prefix(bytes + pos, text.size() - pos);
    // pre-tokenise the valid stretch [pos, pos + valid) as a subject of its own
    size_t at = 0;
    while (at < valid) {
      const int rc =
          pcre2_match(m.pattern, bytes + pos, valid, at, PCRE2_NO_UTF_CHECK, match.get(), nullptr);
      HLA_CHECK(rc > 0, "pcre2_match returned " << rc << " at byte " << pos + at);
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.get());
      // every character matches some alternative, so there is no gap before the match
      HLA_CHECK(ov[0] == at && ov[1] > at, "pattern left a gap at byte " << pos + at);
      m.encode_piece(text.substr(pos + at, ov[1] - at), out);
      at = ov[1];
    }
    pos += valid;
    if (pos < text.size()) {  // an invalid byte: its own piece
      out.push_back(m.byte_id[bytes[pos]]);
      ++pos;
    }
  }
  return out;
}

}  // namespace hla::data

// Tests: text -> HDF5 token dataset -> batches. prepare_corpus round trip (tokens read back equal
// the encoder's output, doc offsets, split rule, dtype, attributes, determinism, interrupts),
// random and sequential windows, and every bad-file case.
#include <hdf5.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "data/corpus_prepare.h"
#include "data/file_io.h"
#include "data/token_dataset.h"
#include "data/token_windows.h"
#include "data/tokenizer.h"
#include "tensor/error.h"
#include "tests/data/temp_dir.h"

using namespace hla::data;
using hla::test::TempDir;
using hla::test::write_text;

namespace {

std::vector<int32_t> read_all(const TokenSource& src) {
  std::vector<int32_t> out(src.size());
  src.read(0, src.size(), out.data());
  return out;
}

// The stored HDF5 type size of /<split>/tokens.
size_t token_type_size(const std::string& path, const std::string& split) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t dset = H5Dopen2(file, (split + "/tokens").c_str(), H5P_DEFAULT);
  const hid_t type = H5Dget_type(dset);
  const size_t size = H5Tget_size(type);
  H5Tclose(type);
  H5Dclose(dset);
  H5Fclose(file);
  return size;
}

std::string prepare(const std::vector<std::string>& inputs, const std::string& out,
                    double val_fraction, const std::string& tokenizer = "gpt2") {
  PrepareOptions opt;
  opt.tokenizer = tokenizer;
  opt.inputs = inputs;
  opt.out = out;
  opt.val_fraction = val_fraction;
  prepare_corpus(opt);
  return out;
}

}  // namespace

TEST_CASE("prepare: documents read back equal the encoder's output", "[data]") {
  TempDir dir("prepare_roundtrip");
  // the directory is listed sorted; hidden files are skipped; "<|endoftext|>" inside a document
  // stays text
  write_text(dir.file("docs/b.txt"), "Second document, caf\xC3\xA9.\n");
  write_text(dir.file("docs/a.txt"), "First <|endoftext|> document.\n");
  write_text(dir.file("docs/.hidden"), "never read");
  write_text(dir.file("docs/sub/c.txt"), "Third.");
  write_text(dir.file("extra.txt"), std::string(3000, 'x') + " tail words here");
  const std::string out = dir.file("corpus.h5");
  const auto summary = [&] {
    PrepareOptions opt;
    opt.inputs = {dir.file("docs"), dir.file("extra.txt")};
    opt.out = out;
    opt.val_fraction = 0.25;
    int calls = 0;
    opt.on_progress = [&](const PrepareProgress& p) {
      ++calls;
      CHECK(p.files_total == 4);
      CHECK(p.files_done == calls);
    };
    return prepare_corpus(opt);
  }();
  CHECK(summary.documents == 4);

  const auto tok = load_tokenizer("gpt2");
  std::vector<int32_t> stream;
  std::vector<int64_t> starts;
  for (const char* f : {"docs/a.txt", "docs/b.txt", "docs/sub/c.txt", "extra.txt"}) {
    starts.push_back(static_cast<int64_t>(stream.size()));
    stream.push_back(50256);
    const auto ids = tok->encode_ordinary(read_file(dir.file(f), "test"));
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  const int64_t n = static_cast<int64_t>(stream.size());
  const int64_t cut = n - std::llround(0.25 * n);

  Hdf5TokenSplit train(out, "train"), val(out, "val");
  CHECK(train.info().tokenizer == "gpt2");
  CHECK(train.info().vocab_size == 50257);
  CHECK(train.info().eot_id == 50256);
  CHECK(token_type_size(out, "train") == 2);  // uint16: the vocabulary fits

  // train: the stream up to the cut, with the document starts before it
  const auto train_ids = read_all(train);
  CHECK(train_ids == std::vector<int32_t>(stream.begin(), stream.begin() + cut));
  std::vector<int64_t> train_offsets;
  for (int64_t s : starts) {
    if (s < cut) train_offsets.push_back(s);
  }
  train_offsets.push_back(cut);
  CHECK(train.doc_offsets() == train_offsets);

  // val: the cut falls inside extra.txt, whose tail gets its own end-of-text token
  REQUIRE(cut > starts.back());
  const auto val_ids = read_all(val);
  std::vector<int32_t> expected_val = {50256};
  expected_val.insert(expected_val.end(), stream.begin() + cut, stream.end());
  CHECK(val_ids == expected_val);
  CHECK(val.doc_offsets() == std::vector<int64_t>{0, static_cast<int64_t>(expected_val.size())});
  CHECK(summary.train_tokens == cut);
  CHECK(summary.val_tokens == static_cast<int64_t>(expected_val.size()));

  // each document decodes back to its file
  CHECK(tok->decode(std::vector<int32_t>(train_ids.begin() + train_offsets[0] + 1,
                                         train_ids.begin() + train_offsets[1])) ==
        "First <|endoftext|> document.\n");
}

TEST_CASE("prepare: the shipped corpus is one document split into train and val", "[data]") {
  TempDir dir("prepare_moby");
  // chapter 1 of the shipped corpus as a small single document
  const std::string text = read_file(HLA_SOURCE_DIR "/tests/fixtures/gpt2/chapter_1.txt", "test");
  write_text(dir.file("ch1.txt"), text);
  const std::string out = prepare({dir.file("ch1.txt")}, dir.file("c.h5"), 0.1);
  Hdf5TokenSplit train(out, "train"), val(out, "val");
  const auto t = read_all(train), v = read_all(val);
  CHECK(train.doc_offsets().size() == 2);
  CHECK(val.doc_offsets().size() == 2);
  // 2863 tokens + end-of-text = 2864, val = round(286.4) = 286 tokens + its end-of-text
  CHECK(t.size() == 2864 - 286);
  CHECK(v.size() == 287);
  CHECK(v[0] == 50256);
  std::vector<int32_t> joined(t.begin() + 1, t.end());
  joined.insert(joined.end(), v.begin() + 1, v.end());
  CHECK(load_tokenizer("gpt2")->decode(joined) == text);
}

TEST_CASE("prepare: deterministic, byte for byte", "[data]") {
  TempDir dir("prepare_determinism");
  write_text(dir.file("in/a.txt"), "alpha beta gamma");
  write_text(dir.file("in/b.txt"), "delta epsilon");
  prepare({dir.file("in")}, dir.file("one.h5"), 0.3);
  prepare({dir.file("in")}, dir.file("two.h5"), 0.3);
  CHECK(read_file(dir.file("one.h5"), "test") == read_file(dir.file("two.h5"), "test"));
}

TEST_CASE("prepare: a rerun into an input directory does not read its own output", "[data]") {
  TempDir dir("prepare_rerun");
  write_text(dir.file("a.txt"), "text");
  prepare({dir.path()}, dir.file("corpus.h5"), 0.0);
  prepare({dir.path()}, dir.file("corpus.h5"), 0.0);
  CHECK(Hdf5TokenSplit(dir.file("corpus.h5"), "train").doc_offsets().size() == 2);
  CHECK(list_documents({dir.path()}, dir.file("corpus.h5")).size() == 1);
}

TEST_CASE("prepare: an interrupt or an error leaves no output file", "[data]") {
  TempDir dir("prepare_interrupt");
  write_text(dir.file("a.txt"), "one");
  write_text(dir.file("b.txt"), "two");
  PrepareOptions opt;
  opt.inputs = {dir.path()};
  opt.out = dir.file("out.h5");
  opt.should_stop = [] { return true; };
  REQUIRE_THROWS_WITH(prepare_corpus(opt), Catch::Contains("interrupt"));
  CHECK_FALSE(std::filesystem::exists(opt.out));
  CHECK_FALSE(std::filesystem::exists(opt.out + ".partial"));
  // stop only at the very end, after the HDF5 file was written
  int polls = 0;
  opt.should_stop = [&] { return ++polls == 3; };
  REQUIRE_THROWS(prepare_corpus(opt));
  CHECK(polls == 3);
  CHECK_FALSE(std::filesystem::exists(opt.out));
  CHECK_FALSE(std::filesystem::exists(opt.out + ".partial"));
}

TEST_CASE("prepare: bad options and inputs give clear errors", "[data]") {
  TempDir dir("prepare_errors");
  write_text(dir.file("a.txt"), "x");
  std::filesystem::create_directories(dir.file("empty"));
  PrepareOptions opt;
  opt.inputs = {dir.file("a.txt")};
  opt.out = dir.file("o.h5");
  opt.val_fraction = 1.0;
  CHECK_THROWS_WITH(prepare_corpus(opt), Catch::Contains("--val-fraction in [0, 1)"));
  opt.val_fraction = 0.1;
  opt.tokenizer = "sentencepiece";
  CHECK_THROWS_WITH(prepare_corpus(opt), Catch::Contains("one of: gpt2, bytes"));
  opt.tokenizer = "bytes";
  opt.inputs = {dir.file("missing.txt")};
  CHECK_THROWS_WITH(prepare_corpus(opt),
                    Catch::Contains("no such path") && Catch::Contains("missing.txt"));
  opt.inputs = {dir.file("empty")};
  CHECK_THROWS_WITH(prepare_corpus(opt), Catch::Contains("at least one text file"));
  opt.inputs = {dir.file("a.txt")};
  opt.out = dir.file("no/such/dir/o.h5");
  CHECK_THROWS_WITH(prepare_corpus(opt), Catch::Contains("create it first"));
}

TEST_CASE("token dataset: uint32 storage when the vocabulary exceeds 65536", "[data]") {
  TempDir dir("dataset_u32");
  const TokenDatasetInfo info{"big", 100000, 99999};
  TokenSplit train{{99999, 70000, 5, 99998}, {0, 4}};
  TokenSplit val{{}, {0}};
  write_token_dataset(dir.file("big.h5"), info, train, val);
  CHECK(token_type_size(dir.file("big.h5"), "train") == 4);
  Hdf5TokenSplit split(dir.file("big.h5"), "train");
  CHECK(read_all(split) == train.tokens);
  CHECK(Hdf5TokenSplit(dir.file("big.h5"), "val").size() == 0);
}

TEST_CASE("token dataset: the writer rejects ids and offsets that do not fit", "[data]") {
  TempDir dir("dataset_writer");
  const TokenDatasetInfo info{"bytes", 257, 256};
  const TokenSplit empty{{}, {0}};
  CHECK_THROWS_WITH(write_token_dataset(dir.file("x.h5"), info, {{256, 300}, {0, 2}}, empty),
                    Catch::Contains("id 300 at index 1"));
  CHECK_THROWS_WITH(write_token_dataset(dir.file("x.h5"), info, {{256, 1}, {0, 1}}, empty),
                    Catch::Contains("doc_offsets"));
  CHECK_THROWS_WITH(write_token_dataset(dir.file("x.h5"), info, {{1, 256}, {0, 2}}, empty),
                    Catch::Contains("end-of-text"));
}

TEST_CASE("windows: random windows are seeded hyperslab reads of T+1 tokens", "[data]") {
  TempDir dir("windows_random");
  // tokens 256, 0, 1, 2, ... so every window shows where it came from
  TokenSplit train{{256}, {0}};
  for (int i = 0; i < 5000; ++i) train.tokens.push_back(i % 256);
  train.doc_offsets.push_back(static_cast<int64_t>(train.tokens.size()));
  write_token_dataset(dir.file("w.h5"), {"bytes", 257, 256}, train, {{}, {0}});
  Hdf5TokenSplit src(dir.file("w.h5"), "train");

  const int64_t B = 4, T = 33;
  RandomWindows a(src, B, T, 7), b(src, B, T, 7), c(src, B, T, 8);
  hla::Generator gen(7);  // the documented draw: offsets uniform in [0, N - T - 1]
  for (int step = 0; step < 5; ++step) {
    const TokenBatch x = a.next(), y = b.next(), z = c.next();
    CHECK(x.inputs == y.inputs);
    CHECK(x.targets == y.targets);
    CHECK(x.inputs != z.inputs);
    REQUIRE((x.B == B && x.T == T && x.inputs.size() == size_t(B * T)));
    for (int64_t r = 0; r < B; ++r) {
      const int64_t start = static_cast<int64_t>(gen.below(src.size() - T));
      for (int64_t t = 0; t < T; ++t) {
        REQUIRE(x.inputs[r * T + t] == train.tokens[start + t]);
        REQUIRE(x.targets[r * T + t] == train.tokens[start + t + 1]);
      }
    }
  }
  // resume from a saved state
  RandomWindows d(src, B, T, 7);
  d.next();
  const auto state = d.state();
  const TokenBatch after = d.next();
  RandomWindows e(src, B, T, 123);
  e.set_state(state);
  CHECK(e.next().inputs == after.inputs);

  CHECK_THROWS_WITH(RandomWindows(src, B, 6000, 0), Catch::Contains("at least 6001 tokens"));
  CHECK_THROWS_WITH(RandomWindows(src, 0, 8, 0), Catch::Contains("B > 0"));
}

TEST_CASE("windows: sequential windows predict every token once", "[data]") {
  TempDir dir("windows_sequential");
  TokenSplit val{{256}, {0}};
  for (int i = 0; i < 100; ++i) val.tokens.push_back(i);
  val.doc_offsets.push_back(101);
  write_token_dataset(dir.file("s.h5"), {"bytes", 257, 256}, {{}, {0}}, val);
  Hdf5TokenSplit src(dir.file("s.h5"), "val");
  const int64_t T = 16;
  SequentialWindows eval(src, 3, T);
  CHECK(eval.num_windows() == 7);  // ceil(100 / 16)
  CHECK(eval.num_batches() == 3);
  std::vector<int32_t> predicted;
  int64_t rows = 0;
  for (int64_t i = 0; i < eval.num_batches(); ++i) {
    const TokenBatch b = eval.batch(i);
    rows += b.B;
    for (int64_t k = 0; k < b.B * T; ++k) {
      if (b.targets[k] != kIgnoreIndex) predicted.push_back(b.targets[k]);
    }
  }
  CHECK(rows == 7);
  CHECK(predicted == std::vector<int32_t>(val.tokens.begin() + 1, val.tokens.end()));
  const TokenBatch last = eval.batch(2);
  CHECK(last.B == 1);
  CHECK(last.inputs[0] == 95);  // window 6 starts at token 96, which holds 95
  CHECK(last.num_targets() == 4);
  CHECK(last.inputs[4] == 0);  // padding
  CHECK_THROWS(eval.batch(3));
}

TEST_CASE("token dataset: bad files give clear errors", "[data]") {
  TempDir dir("dataset_bad");
  SECTION("missing file") {
    CHECK_THROWS_WITH(Hdf5TokenSplit(dir.file("nope.h5"), "train"),
                      Catch::Contains("nope.h5") && Catch::Contains("no such file") &&
                          Catch::Contains("hla data prepare"));
  }
  SECTION("not HDF5") {
    write_text(dir.file("text.h5"), "just some text\n");
    CHECK_THROWS_WITH(Hdf5TokenSplit(dir.file("text.h5"), "train"),
                      Catch::Contains("an HDF5 file") && Catch::Contains("signature"));
    CHECK_THROWS_WITH(open_token_source(dir.file("text.h5")), Catch::Contains("an HDF5 file"));
  }
  SECTION("missing attributes and datasets") {
    const std::string path = dir.file("bare.h5");
    H5Fclose(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    CHECK_THROWS_WITH(Hdf5TokenSplit(path, "train"), Catch::Contains("root attribute 'tokenizer'"));
    write_token_dataset(dir.file("ok.h5"), {"bytes", 257, 256}, {{256, 1}, {0, 2}}, {{}, {0}});
    CHECK_THROWS_WITH(Hdf5TokenSplit(dir.file("ok.h5"), "test"),
                      Catch::Contains("a dataset /test/tokens") &&
                          Catch::Contains("train/tokens, train/doc_offsets"));
  }
  SECTION("token id >= vocab_size") {
    const std::string path = dir.file("vocab.h5");
    write_token_dataset(path, {"bytes", 257, 256}, {{256, 1, 200, 7}, {0, 4}}, {{}, {0}});
    // shrink the recorded vocabulary below the ids in the file
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t attr = H5Aopen(file, "vocab_size", H5P_DEFAULT);
    const int64_t small = 100;
    H5Awrite(attr, H5T_NATIVE_INT64, &small);
    H5Aclose(attr);
    H5Fclose(file);
    Hdf5TokenSplit src(path, "train");
    std::vector<int32_t> out(4);
    CHECK_THROWS_WITH(src.read(0, 4, out.data()),
                      Catch::Contains("[0, 100)") && Catch::Contains("id 256 at token 0"));
    CHECK_THROWS_WITH(src.read(3, 2, out.data()), Catch::Contains("[3, 5)"));
  }
  SECTION("damaged doc_offsets") {
    const std::string path = dir.file("offsets.h5");
    write_token_dataset(path, {"bytes", 257, 256}, {{256, 1, 256, 2}, {0, 2, 4}}, {{}, {0}});
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t dset = H5Dopen2(file, "train/doc_offsets", H5P_DEFAULT);
    const int64_t wrong[3] = {0, 3, 3};
    H5Dwrite(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, wrong);
    H5Dclose(dset);
    H5Fclose(file);
    CHECK_THROWS_WITH(Hdf5TokenSplit(path, "train").doc_offsets(),
                      Catch::Contains("increasing from 0 to the token count 4"));
  }
}

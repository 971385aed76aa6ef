// defines: `hla sweep`, the small-scale reproduction of the study: trains every cell of a grid
// (tasks x variants x linear-to-full ratios x seeds) and collects MQAR accuracy and validation
// perplexity against the ratio.
//
//   hla sweep --grid experiments/grids/NAME.toml [--out DIR] [--set section.key=value ...]
//             [--only SUBSTRING] [--shard I/N] [--collect] [--dry-run] [--no-plots]
//             [--plot-script PATH]
//
// Grid file (experiments/grids/cpu_small.toml is a commented example):
//   [sweep]    out (results directory), variants, ratios ("pure", "r:1"), seeds, transformer
//              (true: add one all-attention row per task and seed)
//   [base]     a run config (experiments/run/config.h) shared by every cell: [base.model],
//              [base.data], [base.optim], [base.train]
//   [tasks.NAME]  metric ("accuracy" | "ppl"), set = ["section.key=value", ...] (the task's data
//              and any other overrides), optional prepare = { tokenizer, inputs, out } (a token
//              file built with `hla data prepare`'s library when `out` does not exist yet)
//   [variants.NAME] set = [...]  per-variant overrides (e.g. small head_dim for gated_deltanet)
// A cell's config is base + task.set + variant set + model.variant/layout/train.seed/train.out
// + --set, so --set wins.
//
// Output in <out>: cells/<cell>/ (each cell's run directory), results.csv (one row per finished
// cell, rewritten atomically after each), results.md (metric per task: variants x ratios, mean
// over seeds) and, unless --no-plots, <task>.png (metric against ratio) and <task>_loss.png (each
// cell's training loss, unfinished cells too) from experiments/plots/plot_sweep.py.
// Resumable: cells with an "ok" row in results.csv are skipped; a cell that was stopped mid-way
// continues from its last checkpoint (train.checkpoint_interval) when that was written under the
// same resolved config, bit for bit as if never stopped; other unfinished cells start over.
// Several GPUs: `--shard I/N` runs every N-th cell starting at I (one process per GPU, e.g. with
// CUDA_VISIBLE_DEVICES=I) and records its rows in results.shard-I-of-N.csv, so processes never
// write one file; a later run without --shard reads those rows as finished cells, merges them
// into results.csv and writes results.md and the plots. `--collect` does only that merge and
// the tables and plots, training nothing (e.g. after a partial run: missing cells show as "-").
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <toml++/toml.h>

#include "data/corpus_prepare.h"
#include "experiments/cli/commands.h"
#include "experiments/run/checkpoint.h"
#include "experiments/run/config.h"
#include "experiments/run/trainer.h"

namespace hla::cli {

namespace {

namespace fs = std::filesystem;

struct SweepArgs {
  std::string grid;
  std::string out;
  std::vector<std::string> set;
  std::string only;
  std::string shard;  // "I/N" or empty
  bool dry_run = false;
  bool collect = false;  // merge what is on record; train nothing
  bool no_plots = false;
  std::string plot_script;
};

struct Task {
  std::string name, metric;
  std::vector<std::string> set;
  std::string prepare_tokenizer, prepare_out;
  std::vector<std::string> prepare_inputs;
};

struct Grid {
  std::string out;
  std::vector<std::string> variants, ratios;
  std::vector<int64_t> seeds;
  bool transformer = false;
  std::string base_toml;
  std::vector<Task> tasks;
  std::map<std::string, std::vector<std::string>> variant_set;
};

struct Cell {
  std::string id, task, variant, ratio;
  int64_t seed = 0;
};

// One results.csv row.
struct Row {
  std::string cell, task, variant, ratio, seed, metric, value, val_loss, val_ppl, val_accuracy,
      steps, seconds, status;
};
const char* kHeader =
    "cell,task,variant,ratio,seed,metric,value,val_loss,val_ppl,val_accuracy,steps,seconds,status";

std::vector<std::string> strings(const toml::node* n, const std::string& key, const std::string& file) {
  std::vector<std::string> out;
  if (!n) return out;
  const toml::array* a = n->as_array();
  if (!a) throw Error(file, key + " to be an array of strings", "another type");
  for (const toml::node& e : *a) {
    const auto s = e.value<std::string>();
    if (!s) throw Error(file, key + " to be an array of strings", "a non-string element");
    out.push_back(*s);
  }
  return out;
}

Grid load_grid(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << "line " << e.source().begin.line;
    throw Error(path, "a valid TOML grid", std::string(e.description()) + " at " + where.str());
  }
  Grid g;
  const toml::table* sweep = root["sweep"].as_table();
  if (!sweep) throw Error(path, "a [sweep] table", "none", "see experiments/grids/cpu_small.toml");
  for (const auto& [k, v] : *sweep) {
    const std::string key(k.str());
    if (key == "out") g.out = v.value<std::string>().value_or("");
    else if (key == "variants") g.variants = strings(&v, "sweep.variants", path);
    else if (key == "ratios") g.ratios = strings(&v, "sweep.ratios", path);
    else if (key == "transformer") g.transformer = v.value<bool>().value_or(false);
    else if (key == "seeds") {
      const toml::array* a = v.as_array();
      if (!a) throw Error(path, "sweep.seeds to be an array of integers", "another type");
      for (const toml::node& e : *a) g.seeds.push_back(e.value<int64_t>().value_or(0));
    } else {
      throw Error(path, "sweep keys out, variants, ratios, seeds, transformer", "'sweep." + key + "'");
    }
  }
  if (g.seeds.empty()) g.seeds = {0};
  if (g.variants.empty() && !g.transformer)
    throw Error(path, "sweep.variants (or sweep.transformer = true)", "none");
  if (g.ratios.empty()) g.ratios = {"pure"};
  if (const toml::table* base = root["base"].as_table()) {
    std::ostringstream os;
    os << *base;
    g.base_toml = os.str();
  }
  const toml::table* tasks = root["tasks"].as_table();
  if (!tasks || tasks->empty()) throw Error(path, "at least one [tasks.NAME] table", "none");
  for (const auto& [name, node] : *tasks) {
    const toml::table* t = node.as_table();
    if (!t) throw Error(path, "tasks." + std::string(name.str()) + " to be a table", "another type");
    Task task;
    task.name = std::string(name.str());
    task.metric = (*t)["metric"].value<std::string>().value_or("ppl");
    if (task.metric != "accuracy" && task.metric != "ppl")
      throw Error(path, "tasks." + task.name + ".metric to be accuracy or ppl", "'" + task.metric + "'");
    task.set = strings(t->get("set"), "tasks." + task.name + ".set", path);
    if (const toml::table* p = (*t)["prepare"].as_table()) {
      task.prepare_tokenizer = (*p)["tokenizer"].value<std::string>().value_or("bytes");
      task.prepare_out = (*p)["out"].value<std::string>().value_or("");
      task.prepare_inputs = strings(p->get("inputs"), "tasks." + task.name + ".prepare.inputs", path);
      if (task.prepare_out.empty() || task.prepare_inputs.empty())
        throw Error(path, "tasks." + task.name + ".prepare with out and inputs", "missing keys");
    }
    g.tasks.push_back(task);
  }
  if (const toml::table* vs = root["variants"].as_table())
    for (const auto& [name, node] : *vs)
      if (const toml::table* t = node.as_table())
        g.variant_set[std::string(name.str())] =
            strings(t->get("set"), "variants." + std::string(name.str()) + ".set", path);
  return g;
}

std::string cell_id(const std::string& task, const std::string& variant, const std::string& ratio,
                    int64_t seed) {
  std::string r = ratio;
  for (char& c : r)
    if (c == ':') c = '-';
  return task + "__" + variant + "__" + r + "__s" + std::to_string(seed);
}

std::vector<Cell> cells_of(const Grid& g) {
  std::vector<Cell> out;
  for (const Task& t : g.tasks) {
    for (const std::string& v : g.variants)
      for (const std::string& r : g.ratios)
        for (int64_t s : g.seeds) out.push_back({cell_id(t.name, v, r, s), t.name, v, r, s});
    if (g.transformer)
      for (int64_t s : g.seeds)
        out.push_back({cell_id(t.name, "transformer", "transformer", s), t.name, "transformer",
                       "transformer", s});
  }
  return out;
}

run::RunConfig cell_config(const Grid& g, const Task& task, const Cell& c, const std::string& out,
                           const std::vector<std::string>& extra) {
  std::vector<std::string> o = task.set;
  if (auto it = g.variant_set.find(c.variant); it != g.variant_set.end())
    o.insert(o.end(), it->second.begin(), it->second.end());
  o.push_back("model.variant=" + c.variant);
  o.push_back("model.layout=" + c.ratio);
  o.push_back("train.seed=" + std::to_string(c.seed));
  o.push_back("train.out=\"" + (fs::path(out) / "cells" / c.id).string() + "\"");
  o.insert(o.end(), extra.begin(), extra.end());
  return run::parse_run_config(g.base_toml, "grid cell " + c.id, o);
}

// ---- results.csv

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string f;
  while (std::getline(ss, f, ',')) out.push_back(f);
  if (!line.empty() && line.back() == ',') out.push_back("");
  return out;
}

std::vector<Row> read_results(const std::string& path) {
  std::vector<Row> rows;
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return rows;  // no file or empty
  while (std::getline(in, line)) {
    const auto f = split_csv(line);
    if (f.size() != 13) continue;
    rows.push_back({f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12]});
  }
  return rows;
}

void write_results(const std::string& path, const std::vector<Row>& rows) {
  const std::string tmp = path + ".partial";
  {
    std::ofstream out(tmp);
    out << kHeader << "\n";
    for (const Row& r : rows)
      out << r.cell << "," << r.task << "," << r.variant << "," << r.ratio << "," << r.seed << ","
          << r.metric << "," << r.value << "," << r.val_loss << "," << r.val_ppl << ","
          << r.val_accuracy << "," << r.steps << "," << r.seconds << "," << r.status << "\n";
    if (!out) throw Error("sweep", "a writable results file", "'" + tmp + "'");
  }
  fs::rename(tmp, path);
}

std::string num(double v) {
  if (std::isnan(v)) return "";
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

std::string csv_safe(std::string s) {
  for (char& c : s)
    if (c == ',' || c == '\n' || c == '\r') c = ';';
  return s;
}

// results.md: per task, variants x ratios, the mean metric over seeds ("ok" rows only).
// One table per task that has a cell in `cells` (the selection after --only).
void write_markdown(const std::string& path, const Grid& g, const std::vector<Cell>& cells,
                    const std::vector<Row>& rows) {
  std::ofstream out(path);
  out << "# Sweep results\n\nMean over seeds of each cell's final evaluation (`results.csv` has every "
         "run). MQAR: recall accuracy on the answer positions (higher is better); language "
         "modelling: validation perplexity (lower is better).\n";
  for (const Task& t : g.tasks) {
    if (std::none_of(cells.begin(), cells.end(), [&](const Cell& c) { return c.task == t.name; }))
      continue;
    std::vector<std::string> cols = g.ratios;
    if (g.transformer) cols.push_back("transformer");
    std::vector<std::string> vars = g.variants;
    if (g.transformer) vars.push_back("transformer");
    out << "\n## " << t.name << " (" << (t.metric == "accuracy" ? "accuracy" : "validation ppl")
        << ")\n\n| variant |";
    for (const auto& c : cols) out << " " << c << " |";
    out << "\n|---|";
    for (size_t i = 0; i < cols.size(); ++i) out << "---|";
    out << "\n";
    for (const auto& v : vars) {
      out << "| " << v << " |";
      for (const auto& c : cols) {
        double sum = 0;
        int n = 0;
        for (const Row& r : rows)
          if (r.task == t.name && r.variant == v && r.ratio == c && r.status == "ok" && !r.value.empty())
            sum += std::stod(r.value), ++n;
        if (n == 0) out << " - |";
        else out << " " << num(sum / n) << (n > 1 ? " (n=" + std::to_string(n) + ")" : "") << " |";
      }
      out << "\n";
    }
  }
}

void prepare_task_data(const Task& t) {
  if (t.prepare_out.empty() || fs::exists(t.prepare_out)) return;
  std::printf("preparing %s from %zu input(s) (%s tokenizer)\n", t.prepare_out.c_str(),
              t.prepare_inputs.size(), t.prepare_tokenizer.c_str());
  std::fflush(stdout);
  if (fs::path(t.prepare_out).has_parent_path())
    fs::create_directories(fs::path(t.prepare_out).parent_path());
  data::PrepareOptions opt;
  opt.tokenizer = t.prepare_tokenizer;
  opt.inputs = t.prepare_inputs;
  opt.out = t.prepare_out;
  data::prepare_corpus(opt);
}

struct Shard {
  int64_t index = 0, count = 1;
};

Shard parse_shard(const std::string& s) {
  Shard sh;
  const size_t slash = s.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument(s);
    size_t used = 0;
    sh.index = std::stoll(s.substr(0, slash), &used);
    if (used != slash) throw std::invalid_argument(s);
    sh.count = std::stoll(s.substr(slash + 1), &used);
    if (used != s.size() - slash - 1) throw std::invalid_argument(s);
  } catch (const std::exception&) {
    throw Error("sweep --shard", "I/N with integers 0 <= I < N (e.g. 0/4)", "'" + s + "'");
  }
  if (sh.count < 1 || sh.index < 0 || sh.index >= sh.count)
    throw Error("sweep --shard", "I/N with 0 <= I < N (e.g. 0/4)", "'" + s + "'");
  return sh;
}

// Rows of results.csv and of every shard file beside it, later files winning per cell.
std::vector<Row> read_all_results(const std::string& out, const std::string& csv) {
  std::vector<Row> rows = read_results(csv);
  std::vector<fs::path> shard_files;
  if (fs::is_directory(out))
    for (const auto& e : fs::directory_iterator(out)) {
      const std::string name = e.path().filename().string();
      if (name.starts_with("results.shard-") && name.ends_with(".csv")) shard_files.push_back(e.path());
    }
  std::sort(shard_files.begin(), shard_files.end());
  for (const fs::path& f : shard_files)
    for (const Row& r : read_results(f.string())) {
      std::erase_if(rows, [&](const Row& old) { return old.cell == r.cell && r.status == "ok"; });
      if (std::none_of(rows.begin(), rows.end(), [&](const Row& old) { return old.cell == r.cell; }))
        rows.push_back(r);
    }
  return rows;
}

// A killed earlier try of a cell continues from its last checkpoint if that checkpoint was
// written under this very config (a changed grid or --set starts the cell over) before its last
// step. Returns the checkpoint's step, 0 when there is nothing to continue.
int64_t resumable_step(const run::RunConfig& config) {
  const std::string checkpoint = run::latest_checkpoint_path(config.train.out);
  if (!fs::exists(checkpoint)) return 0;
  try {
    const run::CheckpointInfo info = run::read_checkpoint_info(checkpoint);
    run::RunConfig expected = config;
    // train() sets an unset vocabulary from the data, as it did before writing the checkpoint
    if (expected.model.vocab_size == 0)
      expected.model.vocab_size =
          run::parse_run_config(info.config_toml, checkpoint).model.vocab_size;
    // a checkpoint of the last step has nothing left to train (and its evaluation is what is
    // missing): start over
    const bool mid_way = info.state.step < config.train.steps;
    return mid_way && info.config_toml == run::to_toml(expected) ? info.state.step : 0;
  } catch (const Error&) {
    return 0;  // unreadable: start over
  }
}

void run_sweep(const SweepArgs& a) {
  const Grid g = load_grid(a.grid);
  const std::string out = !a.out.empty() ? a.out : !g.out.empty() ? g.out : "runs/sweep";
  std::vector<Cell> cells = cells_of(g);
  std::erase_if(cells, [&](const Cell& c) { return c.id.find(a.only) == std::string::npos; });
  const Shard shard = a.shard.empty() ? Shard{} : parse_shard(a.shard);
  if (shard.count > 1) {
    std::vector<Cell> mine;
    for (size_t i = 0; i < cells.size(); ++i)
      if (static_cast<int64_t>(i) % shard.count == shard.index) mine.push_back(cells[i]);
    cells = std::move(mine);
  }
  std::map<std::string, const Task*> task_of;
  for (const Task& t : g.tasks) task_of[t.name] = &t;

  // Resolve every config first: a bad key fails before anything trains.
  std::vector<run::RunConfig> configs;
  for (const Cell& c : cells) configs.push_back(cell_config(g, *task_of.at(c.task), c, out, a.set));
  if (a.dry_run) {
    std::printf("%zu cells (grid %s, out %s)\n", cells.size(), a.grid.c_str(), out.c_str());
    for (size_t i = 0; i < cells.size(); ++i)
      std::printf("  %s: layers %lld, hidden %lld, attention %zu, steps %lld, %s\n", cells[i].id.c_str(),
                  (long long)configs[i].model.num_layers, (long long)configs[i].model.hidden_size,
                  configs[i].model.attention.size(), (long long)configs[i].train.steps,
                  configs[i].data.task.empty() ? configs[i].data.path.c_str() : configs[i].data.task.c_str());
    return;
  }

  fs::create_directories(out);
  const std::string merged_csv = (fs::path(out) / "results.csv").string();
  const bool sharded = shard.count > 1;
  const std::string csv =
      sharded ? (fs::path(out) / ("results.shard-" + std::to_string(shard.index) + "-of-" +
                                  std::to_string(shard.count) + ".csv"))
                    .string()
              : merged_csv;
  // rows: what this run writes (its shard file, or the merged results.csv); finished: every
  // "ok" row on record, a shard's and other runs' alike, so no cell trains twice.
  const std::vector<Row> finished = read_all_results(out, merged_csv);
  std::vector<Row> rows = sharded ? read_results(csv) : finished;
  if (a.collect && sharded)
    throw Error("sweep --collect", "no --shard (collecting merges every shard)", "--shard " + a.shard);
  if (!a.collect)
    for (const Task& t : g.tasks) prepare_task_data(t);
  int64_t ran = 0, skipped = 0, failed = 0;
  for (size_t i = 0; i < cells.size() && !a.collect; ++i) {
    const Cell& c = cells[i];
    const Task& task = *task_of.at(c.task);
    auto done = std::find_if(finished.begin(), finished.end(), [&](const Row& r) { return r.cell == c.id && r.status == "ok"; });
    if (done != finished.end()) {
      std::printf("[%zu/%zu] %s: done (%s %s), skipped\n", i + 1, cells.size(), c.id.c_str(),
                  done->metric.c_str(), done->value.c_str());
      ++skipped;
      continue;
    }
    std::erase_if(rows, [&](const Row& r) { return r.cell == c.id; });  // a failed earlier try
    Row row{c.id, c.task, c.variant, c.ratio, std::to_string(c.seed), task.metric, "", "", "", "",
            "", "", "ok"};
    // "[3/31] cell": the header, the training's progress lines, then the cell's result
    const std::string tag =
        "[" + std::to_string(i + 1) + "/" + std::to_string(cells.size()) + "] " + c.id;
    try {
      const int64_t resume_step = resumable_step(configs[i]);
      if (resume_step == 0) fs::remove_all(configs[i].train.out);  // nothing to continue
      std::printf("%s\n", tag.c_str());  // the training's header says "resumed at step N"
      std::fflush(stdout);
      const run::TrainSummary s = run::train(configs[i], {.resume = resume_step > 0});
      const double value = task.metric == "accuracy" ? s.val_accuracy : std::exp(s.val_loss);
      row.value = num(value);
      row.val_loss = num(s.val_loss);
      row.val_ppl = num(std::exp(s.val_loss));
      row.val_accuracy = num(s.val_accuracy);
      row.steps = std::to_string(s.step);
      row.seconds = num(s.seconds);
      if (std::isnan(value)) row.status = "no-eval";
      std::printf("%s: %s %s (%.1f s)\n", tag.c_str(), task.metric.c_str(), row.value.c_str(),
                  s.seconds);
      ++ran;
    } catch (const std::exception& e) {
      row.status = csv_safe(std::string("error: ") + e.what());
      std::printf("%s: FAILED: %s\n", tag.c_str(), e.what());
      ++failed;
    }
    rows.push_back(row);
    write_results(csv, rows);
    if (!sharded) write_markdown((fs::path(out) / "results.md").string(), g, cells, rows);
  }
  if (sharded) {
    std::printf("sweep shard %lld/%lld: %lld ran, %lld skipped, %lld failed; %s (merge: rerun "
                "without --shard)\n", (long long)shard.index, (long long)shard.count, (long long)ran,
                (long long)skipped, (long long)failed, csv.c_str());
  } else {
    write_results(csv, rows);
    write_markdown((fs::path(out) / "results.md").string(), g, cells, rows);
    if (a.collect) {
      const auto ok = std::count_if(rows.begin(), rows.end(), [](const Row& r) { return r.status == "ok"; });
      std::printf("sweep --collect: %lld of %zu cells finished on record; %s, %s\n", (long long)ok,
                  cells.size(), csv.c_str(), (fs::path(out) / "results.md").string().c_str());
    } else {
      std::printf("sweep: %lld ran, %lld skipped (already done), %lld failed; %s, %s\n",
                  (long long)ran, (long long)skipped, (long long)failed, csv.c_str(),
                  (fs::path(out) / "results.md").string().c_str());
    }
  }
  if (!a.no_plots && !sharded) {
    const std::string script = find_plot_script("plot_sweep.py", a.plot_script);
    const std::string cmd = plot_python() + " '" + script + "' '" + csv + "' --out '" + out +
                            "' --cells '" + (fs::path(out) / "cells").string() + "'";
    std::fflush(stdout);
    if (std::system(cmd.c_str()) != 0)
      throw Error("sweep", "the plot script to succeed", cmd,
                  "it needs python3-matplotlib (scripts/install-deps.sh); or pass --no-plots");
  }
  if (failed > 0)
    throw Error("sweep", "every cell to train", std::to_string(failed) + " failed (see results.csv)",
                "fix the cause and rerun: finished cells are skipped");
}

}  // namespace

void add_sweep_command(CLI::App& app) {
  auto a = std::make_shared<SweepArgs>();
  CLI::App* c = app.add_subcommand(
      "sweep",
      "Train a grid of variants x linear-to-full ratios x seeds; results.csv, results.md, plots. "
      "Rerunning skips finished cells and continues stopped ones from their last checkpoint");
  c->add_option("--grid", a->grid, "grid file (experiments/grids/*.toml)")->required();
  c->add_option("--out", a->out, "results directory (default: the grid's sweep.out)");
  c->add_option("--set", a->set, "override a key of every cell: section.key=value (repeatable)");
  c->add_option("--only", a->only, "run only cells whose id contains this (e.g. mqar__gla)");
  c->add_option("--shard", a->shard,
                "I/N: run every N-th cell from I into results.shard-I-of-N.csv (one process per "
                "GPU); rerun without it to merge");
  c->add_flag("--dry-run", a->dry_run, "list the cells and check their configs; train nothing");
  c->add_flag("--collect", a->collect,
              "merge results.csv and the shard files, write results.md and the plots; train nothing");
  c->add_flag("--no-plots", a->no_plots, "skip experiments/plots/plot_sweep.py");
  c->add_option("--plot-script", a->plot_script, "path of plot_sweep.py (default: found in the source tree)");
  c->callback([a] { run_sweep(*a); });
}

}  // namespace hla::cli

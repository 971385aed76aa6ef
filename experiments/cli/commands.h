// The subcommands of the `hla` command line. Each lives in its own experiments/cli/cmd_<name>.cpp
// and registers itself on the CLI11 app; experiments/main.cpp calls every add_*_command.
// A command reports user errors by throwing hla::Error; main prints the message and exits 1.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace hla::cli {

void add_data_command(CLI::App& app);      // hla data tokenize | prepare | ...
void add_train_command(CLI::App& app);     // hla train --config FILE.toml [--set k=v] ...
void add_eval_command(CLI::App& app);      // hla eval --checkpoint DIR
void add_generate_command(CLI::App& app);  // hla generate --checkpoint DIR --prompt TEXT
void add_op_command(CLI::App& app);    // hla op: one recurrence op on tensors from HDF5
void add_inspect_command(CLI::App& app);  // hla inspect --checkpoint DIR --text T --out trace.h5
void add_sweep_command(CLI::App& app);    // hla sweep --grid experiments/grids/NAME.toml
void add_convert_command(CLI::App& app);  // hla convert --from HF_DIR --out RUN_DIR
void add_export_command(CLI::App& app);   // hla export --checkpoint DIR --out HF_DIR

// Plot helpers (cmd_inspect.cpp), shared by inspect and sweep: the path of
// experiments/plots/<name> (`given` if not empty; else ./experiments/plots or the source tree
// above the binary; throws hla::Error if absent), and the Python to run it with ($HLA_PYTHON,
// else Debian's /usr/bin/python3, which has python3-h5py and python3-matplotlib, else python3).
std::string find_plot_script(const std::string& name, const std::string& given = "");
std::string plot_python();

// Registers every command above (experiments/cli/commands.cpp).
void add_all_commands(CLI::App& app);

}  // namespace hla::cli

// The subcommands of the `hla` command line. Each lives in its own experiments/cli/cmd_<name>.cpp
// and registers itself on the CLI11 app; experiments/main.cpp calls every add_*_command.
// A command reports user errors by throwing hla::Error; main prints the message and exits 1.
#pragma once

namespace CLI {
class App;
}

namespace hla::cli {

void add_data_command(CLI::App& app);  // hla data tokenize | prepare | ...

// Registers every command above (experiments/cli/commands.cpp).
void add_all_commands(CLI::App& app);

}  // namespace hla::cli

//! The `scalpel` command line. Only argument parsing and reporting live here; the work is in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

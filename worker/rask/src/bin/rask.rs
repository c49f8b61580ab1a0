//! `rask`: the engine's command line, with the built-in function families (see [`rask::cli`]).

fn main() -> std::process::ExitCode {
    rask::cli::main(rask::registry())
}

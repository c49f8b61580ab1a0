//! A rask binary that carries the `words` family beside rask's own: the same commands as `rask`
//! (`scheduler`, `worker`, `run`), and workers that can run `words.tokenize` and `words.merge`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut registry = rask::registry();
    if let Err(e) = registry.register(rask_custom_worker::family()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    rask::cli::main(registry)
}

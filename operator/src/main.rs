//! `rask-operator`: the controller and the cluster commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rask-operator",
    version,
    about = "Kubernetes operator for Dask's custom resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write them as the files of `crds/`.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir } => match crds(out_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn crds(out_dir: Option<std::path::PathBuf>) -> Result<(), String> {
    let render = |e: serde_yaml::Error| format!("cannot render the CRDs: {e}");
    let Some(dir) = out_dir else {
        print!("{}", rask_operator::crd::all_yaml().map_err(render)?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (file, content) in rask_operator::crd::files().map_err(render)? {
        let path = dir.join(file);
        std::fs::write(&path, content)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

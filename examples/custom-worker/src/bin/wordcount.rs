//! The client of the example: counts the words of a seeded text on a rask cluster whose workers
//! carry the `words` family (`custom-worker worker ...`), checks the counts against a count done
//! here, and prints the most frequent words.
//!
//! ```sh
//! wordcount --scheduler tcp://127.0.0.1:8786 --lines 100000
//! ```
//!
//! In a DaskJob the scheduler comes from `DASK_SCHEDULER_ADDRESS`, and for a `tls://` scheduler
//! the users' certificate from Dask's variables (`DASK_DISTRIBUTED__COMM__TLS__CA_FILE`,
//! `..._TLS__CLIENT__CERT`, `..._TLS__CLIENT__KEY`), which the operator sets.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use rask::client::Client;
use rask::core::tls::{Role, TlsConfig, TlsSettings};
use rask_custom_worker::{count_words, sample_text, tokenize};

#[derive(Parser)]
#[command(about = "Count words on a rask cluster of custom workers")]
struct Args {
    /// The scheduler's address.
    #[arg(long, env = "DASK_SCHEDULER_ADDRESS")]
    scheduler: String,
    /// Lines of text to count.
    #[arg(long, default_value_t = 20_000)]
    lines: usize,
    /// Lines per `tokenize` task.
    #[arg(long, default_value_t = 1_000)]
    chunk: usize,
    /// Seed of the text.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// This client's TLS identity from Dask's variables, or `None` for plain TCP.
fn client_tls() -> Result<Option<TlsConfig>, String> {
    let settings = TlsSettings::default().with_env(Role::Client, |k| std::env::var(k).ok());
    match settings.files()? {
        Some(files) => TlsConfig::load(&files).map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

async fn run(args: Args) -> Result<(), String> {
    let text = sample_text(args.lines, args.seed);
    let chunks: Vec<String> = text
        .chunks(args.chunk.max(1))
        .map(|c| c.join("\n"))
        .collect();
    let ntasks = chunks.len();
    let client = Client::connect_with(&args.scheduler, client_tls()?)
        .await
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let counts = count_words(&client, chunks, 1)
        .await
        .map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    let expected = tokenize(&text.join("\n"), 1).map_err(|e| e.to_string())?;
    if counts != expected {
        return Err(format!(
            "the cluster counted {} words, this process {}: the counts differ",
            counts.total(),
            expected.total()
        ));
    }
    println!(
        "counted {} words ({} distinct) in {} lines with {ntasks} tokenize tasks in {secs:.3} s",
        counts.total(),
        counts.words.len(),
        args.lines
    );
    for (word, n) in counts.top(5) {
        println!("{word:>12} {n}");
    }
    println!("ok: the counts match a count done here");
    Ok(())
}

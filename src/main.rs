//! The `servent` command.

use clap::Parser;
use servent::cli::{Cli, EXIT_UNAVAILABLE};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(cli.log_filter()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("servent: bad log filter {:?}: {e}", cli.log_filter());
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let name = cli.command.name();
    tracing::debug!(command = name, "starting");
    eprintln!("servent {name}: not available yet in this version");
    std::process::exit(EXIT_UNAVAILABLE);
}

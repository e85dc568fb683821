//! `zsc`: parses the command line and calls the library. See `src/lib.rs` for the map.

use std::process::ExitCode;

use clap::Parser;
use zsc::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            zsc::telemetry::init(args.log_format);
            serve(args).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "zsc failed");
            eprintln!("zsc: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: zsc::cli::ServeArgs) -> zsc::domain::Result<()> {
    let server = zsc::server::Server::open(args.config())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            zsc::domain::Error::internal(format!("cannot listen on {}: {e}", args.listen))
        })?;
    server.run(listener, zsc::shutdown_signal()).await
}

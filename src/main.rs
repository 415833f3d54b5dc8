//! The `camclassd` binary: parse arguments, call the library, map the outcome to an exit code. The
//! arguments are in `cli/args.rs`, each command's glue in `cli/`.
//!
//! Exit codes: 0 success, 1 partial failure (some images failed, others were classified),
//! 2 usage or configuration error (bad arguments or config, missing model or ONNX Runtime library).

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::Failure;
use cli::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
    let ort_lib = cli.ort_lib.as_deref();
    let outcome = match cli.command {
        Command::Run { config } => cli::run::run(&config, ort_lib),
        Command::Classify(args) => cli::tools::classify(args, ort_lib),
        Command::CheckConfig { config } => cli::tools::check_config(&config, ort_lib),
        Command::Verify { model, json, threads } => cli::tools::verify(&model, json, threads, ort_lib),
        Command::Stamp(args) => cli::tools::stamp(args, ort_lib),
        Command::Train(args) => cli::tools::train(args, ort_lib),
        Command::Inspect { model, json, ep } => cli::tools::inspect(&model, json, ep, ort_lib),
        Command::Compare(args) => cli::tools::compare(args, ort_lib),
        Command::Bench(args) => cli::bench::bench(args, ort_lib),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, error }) => {
            eprintln!("camclassd: error: {}", render_error(&error));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes on one line. The library's messages often carry their cause already (and
/// `{:#}` would print it twice): a cause is added only when its text is not there yet.
fn render_error(error: &anyhow::Error) -> String {
    let mut out = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    // Tools print results on stdout; logs go to stderr, warnings only unless asked. ORT's own log lines
    // are routed through tracing under the `ort` target.
    let filter = match level {
        // A bare level applies to camclassd; ORT's own log stays at warnings unless asked for by target.
        Some(l) if !l.contains('=') && !l.contains(',') => EnvFilter::new(format!("{l},ort=warn")),
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,ort=error")),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // Under systemd the journal stamps each line itself (JOURNAL_STREAM is set there): plain lines only.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

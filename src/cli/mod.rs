//! The binary's side of each command: the arguments (`args.rs`), and the glue that calls the library and
//! prints what it returns (`tools.rs`, `bench.rs`, `run.rs`). No business logic lives here.

pub mod args;
pub mod bench;
pub mod run;
pub mod tools;

use std::io::Write;

/// A failure and the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

/// A usage or configuration error (exit 2).
pub fn usage(error: anyhow::Error) -> Failure {
    Failure { code: 2, error }
}

/// Writes a result to stdout; a reader that went away (`| head`) is no error.
pub fn write_stdout(text: &str) -> Result<(), Failure> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure { code: 1, error: anyhow::Error::new(e).context("writing to stdout") })
        }
        _ => Ok(()),
    }
}

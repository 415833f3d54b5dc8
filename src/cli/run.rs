//! `camclassd run`: the daemon's process (the async runtime, signals, malloc arenas, the debug build's test
//! hooks) around the library's run loop.

use std::path::Path;

use anyhow::Context;

use camclassd::config::Config;

use super::{Failure, usage};

pub fn run(path: &Path, ort_lib: Option<&Path>) -> Result<u8, Failure> {
    limit_malloc_arenas();
    let config = Config::load_for_daemon(path).map_err(|e| usage(e.into()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("camclassd-io")
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(|error| Failure { code: 1, error })?;
    let outcome = runtime.block_on(async {
        let signals = camclassd::daemon::Signals { shutdown: stop_signal(), reload: reload_signal() };
        camclassd::daemon::run_with(config, Some(path.to_path_buf()), ort_lib, signals, test_hooks()).await
    });
    // Pending blocking work (a capture thread inside a device read, a reload abandoned at shutdown) must not
    // hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let summary = outcome.map_err(|e| Failure { code: e.exit_code(), error: e.into() })?;
    tracing::debug!(?summary, "exit");
    Ok(0)
}

/// Faults the integration tests inject into the debug binary they run (`CAMCLASSD_TEST_HOOKS`, e.g.
/// `stall-inference-after=10,slow-reload-ms=30000`). Release builds have none: nothing in the environment
/// can make the shipped daemon misbehave.
#[cfg(debug_assertions)]
fn test_hooks() -> camclassd::daemon::Hooks {
    let mut hooks = camclassd::daemon::Hooks::default();
    for item in std::env::var("CAMCLASSD_TEST_HOOKS").unwrap_or_default().split(',') {
        match item.split_once('=') {
            Some(("stall-inference-after", n)) => hooks.stall_inference_after = n.parse().ok(),
            Some(("slow-reload-ms", ms)) => hooks.slow_reload = ms.parse().ok().map(std::time::Duration::from_millis),
            _ => {}
        }
    }
    hooks
}

#[cfg(not(debug_assertions))]
fn test_hooks() -> camclassd::daemon::Hooks {
    camclassd::daemon::Hooks::default()
}

/// glibc gives each new thread its own malloc arena (up to 8 per core), and threads come and go in the
/// daemon (tokio's blocking pool: name lookups at every reconnection, queue fsyncs). Memory freed into a
/// dozen arenas is not reused across them: with the broker flapping every 30 s, RSS crept from 59 to 78 MiB
/// in 10 minutes. Two arenas keep it flat (scripts/soak-mqtt). `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread of ours starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// One message per SIGHUP (`systemctl reload camclassd`).
fn reload_signal() -> tokio::sync::mpsc::Receiver<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // A reload already pending covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP ({e}); config reload is off"),
    }
    rx
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

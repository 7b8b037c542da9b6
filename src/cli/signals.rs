//! Signals: Ctrl-C and SIGTERM finish the current epoch (or flush), then stop; SIGHUP
//! reloads what the running command can reload (the churn model of `run` and `demo`).
//!
//! One thread with a small tokio runtime listens for all three, so that SIGHUP never falls
//! to its default action (ending the process without committing) and is never taken for a
//! stop request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::signal::unix::{signal, SignalKind};

/// What SIGHUP runs, if a command set it.
type Hangup = Box<dyn Fn() + Send>;

static HANGUP: Mutex<Option<Hangup>> = Mutex::new(None);
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// A flag set by the first Ctrl-C or SIGTERM; a second one exits at once.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    if let Some(stop) = STOP.get() {
        return Ok(stop.clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut interrupts, mut terminations, mut hangups) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("clickflow-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    tokio::select! {
                        _ = interrupts.recv() => stop_requested(&flag),
                        _ = terminations.recv() => stop_requested(&flag),
                        _ = hangups.recv() => match HANGUP.lock().ok().as_deref() {
                            Some(Some(reload)) => reload(),
                            _ => tracing::warn!("SIGHUP: nothing to reload in this command"),
                        },
                    }
                }
            })
        })?;
    Ok(STOP.get_or_init(|| stop).clone())
}

fn stop_requested(flag: &AtomicBool) {
    if flag.swap(true, Ordering::SeqCst) {
        eprintln!("second interrupt: exiting without finishing");
        std::process::exit(130);
    }
    eprintln!("stopping after the current epoch (interrupt again to exit at once)");
}

/// Runs `reload` on every SIGHUP from now on.
pub fn on_hangup(reload: impl Fn() + Send + 'static) {
    if let Ok(mut hangup) = HANGUP.lock() {
        *hangup = Some(Box::new(reload));
    }
}

//! Ctrl-C and SIGTERM: finish the current epoch (or flush), then stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag set by the first Ctrl-C or SIGTERM; a second one exits at once.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without finishing");
            std::process::exit(130);
        }
        eprintln!("stopping after the current epoch (interrupt again to exit at once)");
    })?;
    Ok(stop)
}

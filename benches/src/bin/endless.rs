//! Memory on an endless stream: 10M shop events spanning 10 hours of event time go through the
//! whole graph (2 workers by default); resident memory is sampled each time the pipeline watermark
//! crosses an hour. Closed windows and sessions leave the state, so memory after the first
//! hour must stay flat (within 20% of its value at hour one).
//!
//! `cargo run --release -p clickflow-benches --bin endless [EVENTS] [HOURS] [WORKERS]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickflow_benches::run_generated;

fn resident_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let hours: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let metrics = Arc::new(clickflow_dataflow::PipelineMetrics::default());
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (metrics, done) = (metrics.clone(), done.clone());
        std::thread::spawn(move || {
            let mut samples: Vec<(u64, f64)> = Vec::new();
            let start = clickflow_benches::ENDLESS_START_MS;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                let Some(watermark) = metrics.watermark() else {
                    continue;
                };
                let hour = ((watermark - start).max(0) / 3_600_000) as u64;
                if hour >= 1
                    && samples.last().is_none_or(|(h, _)| *h < hour)
                    && watermark != i64::MAX
                {
                    samples.push((hour, resident_mb()));
                }
            }
            samples
        })
    };
    let started = Instant::now();
    let counted = run_generated(events, hours, workers, metrics.clone());
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{counted} events over {hours} h of event time in {seconds:.1} s ({:.0} events/s)",
        counted as f64 / seconds
    );
    println!("hour  RSS (MB)");
    for (hour, mb) in &samples {
        println!("{hour:>4}  {mb:>8.1}");
    }
    if let Some(&(_, first)) = samples.first() {
        let worst = samples
            .iter()
            .map(|(_, mb)| (mb / first - 1.0) * 100.0)
            .fold(f64::MIN, f64::max);
        println!("largest growth after hour one: {worst:+.1}% (bar: +20%)");
    }
}

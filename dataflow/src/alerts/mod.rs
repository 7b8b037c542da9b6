//! Anomaly alerts on the live KPIs, computed in the dataflow.
//!
//! ```text
//!  event_trends ──┐
//!  funnel_summary ┼─► series (worker 0): final counts ─► window_series
//!  rejections ────┘   of every closed window, in order         │
//!  (charged to their partition's clock)                        ▼
//!                                        detectors (worker 0) ─► alerts
//! ```
//!
//! Judged on final window values only ([`series`]), by a deterministic fold over the windows
//! in order ([`detect`]): the same input gives the same alerts on any number of workers, in
//! any epoch cut, and again after a restart, which rebuilds the detectors from the committed
//! `window_series` rows ([`alerting`]). Both tables are written by the same exactly-once sink
//! as the KPIs, so a replay never duplicates an alert. Tuning and static rules come from a
//! TOML file ([`rules`]).
//!
//! A total stop of the input raises nothing: with no events the event-time clock stands
//! still and no window closes (the `/metrics` watermark lag shows it).

pub mod alerting;
pub mod detect;
pub mod quality;
pub mod rules;
pub mod series;

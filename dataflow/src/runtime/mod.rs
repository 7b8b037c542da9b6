//! How the dataflow runs, apart from what it computes ([`crate::kpi`]).
//!
//! ```text
//!  run: threads / processes ─► driver (per worker): poll ─► lateness ─► inputs, cut epochs
//!                                   ▲                                      │
//!        resume (where to start) ───┘      watermark ◄── partition reports ┤
//!                                          replay (restart: rebuild state) ┘
//!  output: gather each closed epoch on worker 0 ─► hand-off to the sink (never blocks)
//!          (or: each worker's rows ─► its own writer; the rest gathered on worker 0)
//! ```

pub mod driver;
pub mod handoff;
pub mod lateness;
pub mod output;
pub mod profile;
pub mod replay;
pub mod resume;
pub mod run;
pub mod watermark;
pub mod worker_rows;

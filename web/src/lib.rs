//! The web server: the HTML dashboard with plotters SVG charts, the JSON API, churn
//! predictions over REST, `/metrics` and `/healthz`, all reading the dataflow's live views.
//!
//! Nothing is implemented yet: the crate holds its place in the workspace so the layout of
//! DESIGN.md is in place and its dependency edges are fixed.

//! The churn model: session features → churn probability, a RandomForest of linfa-trees
//! decision trees, trained offline and loaded by the dataflow and the web server.
//!
//! Nothing is implemented yet: the crate holds its place in the workspace so the layout of
//! DESIGN.md is in place and its dependency edges are fixed (it depends on no other crate of
//! ours).

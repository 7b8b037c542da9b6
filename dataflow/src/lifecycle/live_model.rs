//! The model the pipeline scores with, and how it is replaced while the pipeline runs.
//!
//! Whoever replaces the model (the retrainer, an operator's `SIGHUP` or `POST
//! /api/v1/models`) calls [`LiveModel::replace`]: REST predictions use the new model at once,
//! and worker 0 sends it into the dataflow at the start of its next epoch, from which every
//! worker scores with it (see [`crate::kpi::churn`]). Nothing pauses and nothing blocks a worker:
//! the worker takes what is pending with one uncontended lock per epoch.

use std::sync::{Arc, Mutex, RwLock};

use clickflow_model::ChurnModel;

/// The scoring model, shared by the dataflow, the web server and whoever replaces it.
#[derive(Clone)]
pub struct LiveModel {
    inner: Arc<Inner>,
}

struct Inner {
    current: RwLock<Arc<ChurnModel>>,
    /// Replacements the dataflow has not taken yet, oldest first.
    pending: Mutex<Vec<Arc<ChurnModel>>>,
}

impl LiveModel {
    /// Scoring starts with `model`.
    pub fn new(model: Arc<ChurnModel>) -> LiveModel {
        LiveModel {
            inner: Arc::new(Inner {
                current: RwLock::new(model),
                pending: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The model in use (the latest replacement).
    pub fn current(&self) -> Arc<ChurnModel> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Scores with `model` from now on: REST at once, the dataflow from worker 0's next
    /// epoch.
    pub fn replace(&self, model: Arc<ChurnModel>) {
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = model.clone();
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(model);
    }

    /// The replacements the dataflow has not taken yet, emptied (worker 0 sends them).
    pub fn take_pending(&self) -> Vec<Arc<ChurnModel>> {
        std::mem::take(&mut *self.inner.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::fmt::Debug for LiveModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveModel")
            .field("current", &self.current().version())
            .finish()
    }
}

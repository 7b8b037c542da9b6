//! The model file: a magic number, the format version, then the header and the forest in
//! bincode.
//!
//! ```text
//!  b"CLKFLWM\n" | format version (u32, little endian) | bincode(header, forest)
//! ```
//!
//! The header carries the model version (a SHA-256 of the forest's bytes), the feature names,
//! the training date and the training report. Loading checks all of it (magic, format,
//! feature names, hash, and that every tree can be walked safely), so a wrong, truncated,
//! damaged or foreign file is an error that says which, never a panic or a wrong score.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bincode::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::features::FEATURE_NAMES;
use crate::forest::{Forest, InvalidForest};
use crate::train::{ChurnModel, FeatureDefaults, TrainingReport};

/// The first bytes of every model file.
const MAGIC: &[u8; 8] = b"CLKFLWM\n";

/// The layout this build writes and reads. Version 1 held a forest of the three features of
/// finished sessions (trained with their outcome inside the features); version 2 holds the
/// prefix model of eight features and its time-split evaluation.
pub const FORMAT_VERSION: u32 = 2;

/// A model file larger than this is not one of ours (a forest of hundreds of deep trees is a
/// few MB); the limit also bounds what a damaged length field can make bincode allocate.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// What a model file says about its model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    /// The file layout ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// `rf-` and the first 16 hex digits of the SHA-256 of the forest's bytes.
    pub model_version: String,
    /// The features, in the order the model takes them.
    pub feature_names: Vec<String>,
    /// When it was trained, RFC 3339.
    pub trained_at: String,
    /// What training saw and measured.
    pub report: TrainingReport,
    /// What a REST request may leave out.
    pub defaults: FeatureDefaults,
}

impl ModelHeader {
    pub(crate) fn new(
        forest: &Forest,
        trained_at: OffsetDateTime,
        report: TrainingReport,
        defaults: FeatureDefaults,
    ) -> ModelHeader {
        ModelHeader {
            format_version: FORMAT_VERSION,
            model_version: content_version(forest),
            feature_names: FEATURE_NAMES.iter().map(|n| n.to_string()).collect(),
            trained_at: trained_at
                .format(&Rfc3339)
                .unwrap_or_else(|_| trained_at.unix_timestamp().to_string()),
            report,
            defaults,
        }
    }
}

/// Why a model file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read or written.
    #[error("model file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// It does not start like a clickflow model file.
    #[error(
        "{path} is not a clickflow model file (no model header); train one with `clickflow train`"
    )]
    NotAModel {
        /// The file.
        path: PathBuf,
    },
    /// It was written in another layout.
    #[error("model file {path} has format version {found}; this clickflow reads version {FORMAT_VERSION} (version 1 models were trained on finished sessions and cannot score open ones): retrain it with `clickflow train`")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The version it has.
        found: u32,
    },
    /// Its bytes do not decode: truncated or damaged.
    #[error("model file {path} is truncated or damaged: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What did not decode.
        detail: String,
    },
    /// It was trained on other features.
    #[error(
        "model file {path} expects features {found:?}, but clickflow computes {FEATURE_NAMES:?}"
    )]
    FeatureMismatch {
        /// The file.
        path: PathBuf,
        /// Its feature names.
        found: Vec<String>,
    },
    /// Its forest does not hash to its version: the trees were altered.
    #[error("model file {path} is damaged: its trees do not match its version {version}")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// The version its header claims.
        version: String,
    },
    /// A tree cannot be walked safely.
    #[error("model file {path} holds an invalid forest")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: InvalidForest,
    },
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_FILE_BYTES)
        .reject_trailing_bytes()
}

/// The version of a forest: the same trees always give the same version.
fn content_version(forest: &Forest) -> String {
    let bytes = codec()
        .serialize(forest)
        .expect("an in-memory forest serialises");
    let digest = Sha256::digest(&bytes);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("rf-{hex}")
}

impl ChurnModel {
    /// The model file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let body = codec()
            .serialize(&(&self.header, &self.forest))
            .expect("an in-memory model serialises");
        bytes.extend_from_slice(&body);
        bytes
    }

    /// Writes the model file to `path` (through a temporary file and a rename, so a reader
    /// never sees half a model).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        fs::write(&partial, self.to_bytes()).map_err(io)?;
        fs::rename(&partial, path).map_err(io)
    }

    /// Reads and checks the model file at `path`.
    pub fn load(path: &Path) -> Result<ChurnModel, ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = fs::metadata(path).map_err(io)?.len();
        if size > MAX_FILE_BYTES {
            return Err(ModelError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("{size} bytes is larger than any model ({MAX_FILE_BYTES} max)"),
            });
        }
        let bytes = fs::read(path).map_err(io)?;
        ChurnModel::from_bytes(&bytes, path)
    }

    /// Decodes and checks a model file's bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<ChurnModel, ModelError> {
        let path = || path.to_path_buf();
        let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Err(ModelError::NotAModel { path: path() });
        };
        let Some((format, body)) = rest.split_first_chunk::<4>() else {
            return Err(ModelError::Corrupt {
                path: path(),
                detail: "it ends inside the format version".into(),
            });
        };
        let found = u32::from_le_bytes(*format);
        if found != FORMAT_VERSION {
            return Err(ModelError::UnsupportedFormat {
                path: path(),
                found,
            });
        }
        let (header, forest): (ModelHeader, Forest) =
            codec().deserialize(body).map_err(|e| ModelError::Corrupt {
                path: path(),
                detail: e.to_string(),
            })?;
        if header.format_version != FORMAT_VERSION {
            return Err(ModelError::UnsupportedFormat {
                path: path(),
                found: header.format_version,
            });
        }
        if header.feature_names != FEATURE_NAMES {
            return Err(ModelError::FeatureMismatch {
                path: path(),
                found: header.feature_names,
            });
        }
        forest.validate().map_err(|source| ModelError::Invalid {
            path: path(),
            source,
        })?;
        if content_version(&forest) != header.model_version {
            return Err(ModelError::HashMismatch {
                path: path(),
                version: header.model_version,
            });
        }
        Ok(ChurnModel { header, forest })
    }
}

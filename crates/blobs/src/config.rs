//! Picking a store by configuration.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{BlobStore, LocalStore, Result};

/// Which blob store to use, e.g. `{"kind":"local","dir":"/srv/veil/blobs"}` or
/// `{"kind":"s3","bucket":"models","endpoint":"http://127.0.0.1:9000","region":"us-east-1"}`.
///
/// S3 credentials come from the usual environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …), never from this configuration, so it can be logged
/// and committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BlobConfig {
    /// A local directory (created if missing).
    Local { dir: PathBuf },
    /// An S3-compatible object store (needs the `s3` cargo feature).
    S3 {
        bucket: String,
        /// e.g. `http://127.0.0.1:9000` for MinIO; absent for AWS itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        /// Absent: `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// A key prefix inside the bucket (e.g. `veil/`); blobs go under `<prefix>sha256/…`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        /// Allow a plain-HTTP endpoint (local test servers). Default: only when the endpoint is on a
        /// loopback address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allow_http: Option<bool>,
    },
}

impl BlobConfig {
    /// A local store in `dir`.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self::Local { dir: dir.into() }
    }

    /// Opens the configured store.
    pub fn open(&self) -> Result<Arc<dyn BlobStore>> {
        match self {
            BlobConfig::Local { dir } => Ok(Arc::new(LocalStore::open(dir)?)),
            #[cfg(feature = "s3")]
            BlobConfig::S3 {
                bucket,
                endpoint,
                region,
                prefix,
                allow_http,
            } => Ok(Arc::new(crate::S3Store::open(&crate::S3Config {
                bucket: bucket.clone(),
                endpoint: endpoint.clone(),
                region: region.clone(),
                prefix: prefix.clone().unwrap_or_default(),
                allow_http: *allow_http,
            })?)),
            #[cfg(not(feature = "s3"))]
            BlobConfig::S3 { bucket, .. } => Err(crate::BlobError::Config(format!(
                "bucket {bucket:?} is in an S3-compatible store, but this build has no S3 support; \
                 rebuild with the `s3` cargo feature of veil-blobs"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        let local: BlobConfig = serde_json::from_str(r#"{"kind":"local","dir":"/srv/blobs"}"#).unwrap();
        assert_eq!(local, BlobConfig::local("/srv/blobs"));
        let s3: BlobConfig = serde_json::from_str(
            r#"{"kind":"s3","bucket":"models","endpoint":"http://127.0.0.1:9000","region":"eu-west-1"}"#,
        )
        .unwrap();
        assert!(
            matches!(&s3, BlobConfig::S3 { bucket, region: Some(r), prefix: None, .. }
            if bucket == "models" && r == "eu-west-1")
        );
        let back: BlobConfig = serde_json::from_str(&serde_json::to_string(&s3).unwrap()).unwrap();
        assert_eq!(back, s3);
        let err = serde_json::from_str::<BlobConfig>(r#"{"kind":"ftp","dir":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
        let err = serde_json::from_str::<BlobConfig>(r#"{"kind":"local","dri":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_without_the_feature_says_how_to_get_it() {
        let cfg = BlobConfig::S3 {
            bucket: "b".into(),
            endpoint: None,
            region: None,
            prefix: None,
            allow_http: None,
        };
        let err = cfg.open().unwrap_err().to_string();
        assert!(err.contains("`s3` cargo feature"), "{err}");
    }
}

//! Reads multi-document YAML manifests (like `examples/`) into the resources the render
//! takes, the way the apiserver would store them: `stringData` merged into `data`, and the
//! namespace filled in. Used by tests and to render examples offline.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde::Deserialize;

use crate::crd::{MediaApp, StreamAuth};

/// The resources found in some manifests.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub media_apps: Vec<MediaApp>,
    pub stream_auths: Vec<StreamAuth>,
    pub secrets: Vec<Secret>,
    /// Every document as JSON, in order (for schema validation).
    pub documents: Vec<serde_json::Value>,
}

impl Manifests {
    /// Adds every document of `yaml`, placing namespaced objects in `namespace`.
    pub fn add(&mut self, yaml: &str, namespace: &str) -> Result<(), String> {
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_json::Value::deserialize(doc).map_err(|e| format!("not YAML: {e}"))?;
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let bad = |e: serde_json::Error| format!("{kind} {name}: {e}");
            match kind.as_str() {
                "MediaApp" => {
                    let mut m: MediaApp = serde_json::from_value(value.clone()).map_err(bad)?;
                    m.metadata.namespace.get_or_insert_with(|| namespace.to_string());
                    self.media_apps.push(m);
                }
                "StreamAuth" => {
                    let mut s: StreamAuth = serde_json::from_value(value.clone()).map_err(bad)?;
                    s.metadata.namespace.get_or_insert_with(|| namespace.to_string());
                    self.stream_auths.push(s);
                }
                "Secret" => {
                    let mut s: Secret = serde_json::from_value(value.clone()).map_err(bad)?;
                    s.metadata.namespace.get_or_insert_with(|| namespace.to_string());
                    // The apiserver stores stringData as data (stringData wins a clash).
                    if let Some(strings) = s.string_data.take() {
                        let data = s.data.get_or_insert_with(Default::default);
                        for (k, v) in strings {
                            data.insert(k, ByteString(v.into_bytes()));
                        }
                    }
                    self.secrets.push(s);
                }
                other => return Err(format!("unexpected kind {other:?} ({name})")),
            }
            self.documents.push(value);
        }
        Ok(())
    }
}

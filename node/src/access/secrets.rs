//! Sealed secrets (stub: the store's interface; sealing comes next).

use super::store::AccessStore;
use std::sync::Arc;
use tonic::Status;

pub struct Secrets {
    store: Arc<AccessStore>,
}

impl Secrets {
    pub fn new(store: Arc<AccessStore>) -> Self {
        Self { store }
    }

    pub async fn put(
        &self,
        _name: &str,
        _value: &[u8],
        _by: &str,
    ) -> Result<serde_json::Value, Status> {
        Err(Status::unimplemented("secrets are not built yet"))
    }

    pub fn list(&self) -> serde_json::Value {
        let names: Vec<String> = self
            .store
            .with_book(|b| b.secrets.keys().cloned().collect());
        serde_json::json!({ "secrets": names })
    }

    pub async fn delete(&self, _name: &str) -> Result<serde_json::Value, Status> {
        Err(Status::unimplemented("secrets are not built yet"))
    }

    pub fn get(&self, _name: &str) -> Result<(u64, Vec<u8>), Status> {
        Err(Status::unimplemented("secrets are not built yet"))
    }
}

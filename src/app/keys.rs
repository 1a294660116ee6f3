//! Which products a game server's ingest key admits (API.md "Auth"),
//! shared by every ingest front end (HTTP, WebSocket, RESP). Keys are
//! compared in constant time.

use std::collections::HashMap;

use crate::infra::config::ProductConfig;

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which products each ingest key admits.
pub struct IngestKeys(Vec<(String, Vec<String>)>);

impl IngestKeys {
    /// The keys of the configured products.
    pub fn new(products: &[ProductConfig]) -> Self {
        let mut keys: HashMap<String, Vec<String>> = HashMap::new();
        for p in products {
            keys.entry(p.ingest_key.clone())
                .or_default()
                .push(p.product_id.clone());
        }
        IngestKeys(keys.into_iter().collect())
    }

    /// The products `key` admits; `None` for an unknown key. Every known
    /// key is compared, so the time taken does not say which one matched.
    pub fn admit(&self, key: &str) -> Option<Vec<String>> {
        let mut admitted = None;
        for (known, products) in &self.0 {
            if same_secret(known, key) {
                admitted = Some(products.clone());
            }
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }

    #[test]
    fn a_shared_key_admits_each_of_its_products() {
        let mut products = crate::infra::config::Config::default().games;
        let mut other = products[0].clone();
        other.product_id = "chess".into();
        products.push(other);
        let keys = IngestKeys::new(&products);
        let mut admitted = keys.admit("exrps-secret").unwrap();
        admitted.sort();
        assert_eq!(admitted, ["chess", "exrps"]);
        assert!(keys.admit("exrps-secre").is_none());
    }
}

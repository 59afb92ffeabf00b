//! A compact, immutable map from claim name to JSON value: the claims a session keeps beside
//! the mapped ones, for policy rules and claim headers.
//!
//! Every cached session holds it for as long as it is cached. A `BTreeMap` allocates a whole
//! 11-slot node for its first entry (~640 bytes), so the four other claims of a Keycloak ID
//! token (`given_name`, `family_name`, `acr`, `session_state`) cost more than the rest of the
//! session's claims together. A [`ClaimMap`] is one exactly sized slice of entries sorted by
//! name: 4 entries take 192 bytes. Lookups are a binary search; it reads, iterates (in name
//! order) and serializes as the map it was (a JSON object in stored records, unchanged).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClaimMap {
    /// Sorted by name, names unique.
    entries: Box<[(Box<str>, Value)]>,
}

impl ClaimMap {
    fn position(&self, name: &str) -> Option<usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(name)).ok()
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        Some(&self.entries[self.position(name)?].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The claims in name order, as a `BTreeMap` iterates them.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> + '_ {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets `name` (rebuilding the slice: for building claims, not for a hot path); the
    /// value it replaces, if any.
    pub fn insert(&mut self, name: Box<str>, value: Value) -> Option<Value> {
        let old = self.get(&name).cloned();
        // Given last, it is the one kept.
        let entries = std::mem::take(&mut self.entries).into_vec();
        *self = entries.into_iter().chain([(name, value)]).collect();
        old
    }

    /// Keeps only the claims `read` names (a cached session's copy: see [`ClaimsRead`]).
    pub fn keep(&mut self, read: &ClaimsRead) {
        if self.iter().all(|(k, _)| read.reads(k)) {
            return;
        }
        // Collected anew, exactly sized (a filtered vector keeps its block).
        let entries = std::mem::take(&mut self.entries).into_vec();
        *self = entries.into_iter().filter(|(k, _)| read.reads(k)).collect();
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let i = self.position(name)?;
        let mut entries = std::mem::take(&mut self.entries).into_vec();
        let (_, v) = entries.remove(i);
        *self = entries.into_iter().collect();
        Some(v)
    }
}

/// Which of a session's other claims the request path can read under one config: the names
/// its policy and deny rules test, its claim headers' paths (whole, and their first segment
/// for nested ones), `remote_user`'s claim, prefix mode's allow list, or every claim when a
/// prefix mode sends them all (`Config::claims_read`). A cached session keeps only those:
/// other claims are often most of its memory (an Entra ID token carries a dozen), and a copy
/// is tied to the config it was made under (`UserSession::epoch`), so a reload that reads
/// more claims reads the record again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimsRead {
    All,
    /// Sorted, unique.
    Named(Box<[Box<str>]>),
}

impl ClaimsRead {
    pub fn named<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut names: Vec<Box<str>> = names.into_iter().map(|n| n.as_ref().into()).collect();
        names.sort();
        names.dedup();
        Self::Named(names.into_boxed_slice())
    }

    pub fn reads(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Named(names) => names.binary_search_by(|n| (**n).cmp(name)).is_ok(),
        }
    }
}

/// `value` in exactly sized blocks: a JSON array read from a token or a record grows as it is
/// read (5 elements hold 8 slots), and a collected or shrunk vector may keep its block.
fn compact(value: Value) -> Value {
    match value {
        Value::Array(items) => {
            let mut exact = Vec::with_capacity(items.len());
            exact.extend(items.into_iter().map(compact));
            Value::Array(exact)
        }
        Value::String(s) if s.capacity() > s.len() => Value::String(s.as_str().to_owned()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, compact(v))).collect())
        }
        other => other,
    }
}

/// Later entries win over earlier ones with the same name, as inserting into a map does.
impl<K: AsRef<str>> FromIterator<(K, Value)> for ClaimMap {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(claims: I) -> Self {
        // Names copied into exact blocks (a `String` with spare room would be shrunk in place).
        let mut all: Vec<(Box<str>, Value)> = claims
            .into_iter()
            .map(|(k, v)| (Box::from(k.as_ref()), v))
            .collect();
        // Stable: equal names stay in the order given. `dedup_by` keeps the first of a run;
        // the later value moves into it, so the last one given is the one kept.
        all.sort_by(|(a, _), (b, _)| a.cmp(b));
        all.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        // Exactly sized, not shrunk in place (see `compact`).
        let mut exact = Vec::with_capacity(all.len());
        exact.extend(all.into_iter().map(|(k, v)| (k, compact(v))));
        Self {
            entries: exact.into_boxed_slice(),
        }
    }
}

impl fmt::Debug for ClaimMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for ClaimMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for ClaimMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(std::collections::BTreeMap::<String, Value>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn pairs() -> Vec<(String, Value)> {
        vec![
            ("given_name".into(), json!("Ada")),
            ("acr".into(), json!("1")),
            ("roles".into(), json!(["a", "b", "c"])),
            ("".into(), json!(null)),
            ("realm_access".into(), json!({"roles": ["x"], "n": 1})),
            ("acr".into(), json!("2")),
            ("Zeta".into(), json!(false)),
            ("ü".into(), json!(1.5)),
        ]
    }

    #[test]
    fn reads_iterates_and_serializes_as_a_btreemap() {
        let m: ClaimMap = pairs().into_iter().collect();
        let b: BTreeMap<String, Value> = pairs().into_iter().collect();
        assert_eq!(m.len(), b.len());
        assert!(m
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .eq(b.clone()));
        for (k, v) in &b {
            assert_eq!(m.get(k), Some(v), "{k}");
            assert!(m.contains_key(k));
        }
        assert_eq!(m.get("acr"), Some(&json!("2")), "the later of two wins");
        assert_eq!(m.get("missing"), None);
        assert_eq!(m.get("ac"), None);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let back: ClaimMap = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(format!("{m:?}"), format!("{b:?}"));
        let empty = ClaimMap::default();
        assert!(empty.is_empty() && empty.get("").is_none());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
        for bad in ["[]", "1", r#"{"a":1,"#, "null"] {
            assert!(serde_json::from_str::<ClaimMap>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn insert_and_remove_keep_it_a_map() {
        let mut m: ClaimMap = pairs().into_iter().collect();
        let mut b: BTreeMap<String, Value> = pairs().into_iter().collect();
        assert_eq!(
            m.insert("acr".into(), json!(3)),
            b.insert("acr".into(), json!(3))
        );
        assert_eq!(
            m.insert("new".into(), json!("n")),
            b.insert("new".into(), json!("n"))
        );
        assert_eq!(m.remove("roles"), b.remove("roles"));
        assert_eq!(m.remove("roles"), None);
        assert!(m.iter().map(|(k, v)| (k.to_string(), v.clone())).eq(b));
    }

    #[test]
    fn keep_drops_the_claims_nobody_reads() {
        let full: ClaimMap = pairs().into_iter().collect();
        let mut all = full.clone();
        all.keep(&ClaimsRead::All);
        assert_eq!(all, full);
        let mut some = full.clone();
        some.keep(&ClaimsRead::named(["roles", "acr", "absent", "roles", "ü"]));
        assert!(some.iter().map(|(k, _)| k).eq(["acr", "roles", "ü"]));
        assert_eq!(some.get("acr"), full.get("acr"));
        let mut none = full.clone();
        none.keep(&ClaimsRead::named(Vec::<&str>::new()));
        assert!(none.is_empty());
        // Names compare exactly: no case folding, no prefix.
        let mut exact = full.clone();
        exact.keep(&ClaimsRead::named(["ACR", "role", "given_name "]));
        assert!(exact.is_empty());
    }

    #[test]
    fn values_are_kept_exactly_sized() {
        let mut grown = Vec::new();
        for i in 0..5 {
            grown.push(json!(i));
        }
        assert!(grown.capacity() > grown.len());
        let m: ClaimMap = [("a", Value::Array(grown)), ("b", json!({"c": [1, 2, 3]}))]
            .into_iter()
            .collect();
        let Some(Value::Array(a)) = m.get("a") else {
            panic!("an array")
        };
        assert_eq!((a.len(), a.capacity()), (5, 5));
        assert_eq!(m.get("b"), Some(&json!({"c": [1, 2, 3]})));
    }

    proptest::proptest! {
        /// Any claims, with repeated and odd names, read back as a `BTreeMap` built from the
        /// same pairs does, and serialize to the same JSON.
        #[test]
        fn any_claims_behave_as_a_btreemap(
            pairs in proptest::collection::vec(("[a-c]{0,2}|\\PC{0,3}", proptest::num::i64::ANY), 0..12),
            probe in "[a-c]{0,2}",
        ) {
            let pairs: Vec<(String, Value)> = pairs.into_iter().map(|(k, n)| (k, json!(n))).collect();
            let m: ClaimMap = pairs.clone().into_iter().collect();
            let b: BTreeMap<String, Value> = pairs.into_iter().collect();
            proptest::prop_assert_eq!(m.get(&probe), b.get(&probe));
            proptest::prop_assert_eq!(m.len(), b.len());
            proptest::prop_assert_eq!(serde_json::to_string(&m).unwrap(), serde_json::to_string(&b).unwrap());
            let mut kept = m.clone();
            let read = ClaimsRead::named([probe.as_str(), "a", "bc"]);
            kept.keep(&read);
            let mut b = b;
            b.retain(|k, _| read.reads(k));
            proptest::prop_assert!(kept.iter().map(|(k, v)| (k.to_string(), v.clone())).eq(b));
        }
    }
}
